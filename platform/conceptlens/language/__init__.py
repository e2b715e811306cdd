"""Method 4 (LBEE, METHODS.md §4): failure modes described in sentences. Sentence banks from YAML, the four
methods (TopS, SetDiff, PDiff, FPDiff) on similarities, validation on held-out rows and the paper's metrics."""
from conceptlens.language.bank import BUNDLED, Group, SentenceBank, Vocabulary, build_bank, compose_negations, embed_bank
from conceptlens.language.describe import (ClusterSentences, Rows, Settings, describe_clusters, method_metrics,
                                           pick_rows, universe, validate_sentences, validation_rows)
from conceptlens.language.methods import (METHODS, Contrast, candidate_objects, easy_weights, near_easy_clusters,
                                          pdiff, ranked, score_all, term_gains)
from conceptlens.language.validate import (Retrieval, lbee_metrics, reference_set, retrieve, retrieved_rows,
                                           validate)

__all__ = ["BUNDLED", "METHODS", "ClusterSentences", "Contrast", "Group", "Retrieval", "Rows", "SentenceBank",
           "Settings", "Vocabulary", "build_bank", "candidate_objects", "compose_negations", "describe_clusters",
           "easy_weights", "embed_bank", "lbee_metrics", "method_metrics", "near_easy_clusters", "pdiff",
           "pick_rows", "ranked", "reference_set", "retrieve", "retrieved_rows", "score_all", 
           "term_gains", "universe", "validate", "validate_sentences", "validation_rows"]
