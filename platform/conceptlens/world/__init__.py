"""ConceptWorld: a rendered benchmark world with ground-truth attributes and planted failures."""
from conceptlens.world.generate import SPLITS, generate_world, read_manifest, split_arrays
from conceptlens.world.render import render
from conceptlens.world.scenarios import Scenario
from conceptlens.world.vocabulary import ATTRIBUTE_GROUPS, CLASSES, GROUPS, attribute_columns, caption

__all__ = ["ATTRIBUTE_GROUPS", "CLASSES", "GROUPS", "SPLITS", "Scenario", "attribute_columns", "caption",
           "generate_world", "read_manifest", "render", "split_arrays"]
