"""ConceptWorld: a rendered benchmark world with ground-truth attributes and planted failures.

Its manifest (:func:`read_manifest`) is data like a user's; its truth (:func:`read_truth`) lies in its own file
beside it, read only by ``world/``, ``recipes/`` and ``evaluation/``."""
from conceptlens.world.generate import (SPLITS, generate_world, read_manifest, read_truth, split_arrays,
                                        split_truth)
from conceptlens.world.render import render
from conceptlens.world.scenarios import Scenario
from conceptlens.world.vocabulary import ATTRIBUTE_GROUPS, CLASSES, GROUPS, attribute_columns, caption

__all__ = ["ATTRIBUTE_GROUPS", "CLASSES", "GROUPS", "SPLITS", "Scenario", "attribute_columns", "caption",
           "generate_world", "read_manifest", "read_truth", "render", "split_arrays", "split_truth"]
