"""Method 1, offline half (Hu et al., CAIN 2025; METHODS.md §1): the aligner from the classifier's
encoder into the VLM space, concept scores, semantic and differential heatmaps, responsible
concepts and encoder-vs-head fault localisation. Other wings use the names exported here."""
from conceptlens.semantic.aligner import Aligner, AlignerFit, HeldOutR2
from conceptlens.semantic.analysis import AnalysisResult, ConceptAnalysis
from conceptlens.semantic.heatmaps import (MEAN_GROUPS, HeatmapAccumulator, Responsible, matrix, presence,
                                           responsible_concepts)
from conceptlens.semantic.localize import FAULTS, FaultSummary, localize
from conceptlens.semantic.scoring import SOURCES, ConceptScorer, source_embeddings, stack, unit
from conceptlens.semantic.trust import Trust, read_trust

__all__ = ["FAULTS", "MEAN_GROUPS", "SOURCES", "Aligner", "AlignerFit", "AnalysisResult", "ConceptAnalysis",
           "ConceptScorer", "FaultSummary", "HeatmapAccumulator", "HeldOutR2", "Responsible", "Trust", "read_trust",
           "localize", "matrix", "presence", "responsible_concepts", "source_embeddings", "stack", "unit"]
