"""Method 3 (HUDD/SAFE, METHODS.md §3): root-cause clustering of failures. Features (the tables' vectors and
concept scores, failure directions, and image extractors: a backbone, an autoencoder, LRP relevance), reductions,
clusterings with hyper-parameters chosen by an internal index, the pipeline grid on Ray and a card per cluster."""
from conceptlens.rootcause.cards import Card, add_concepts, build_cards, describe
from conceptlens.rootcause.cluster import CLUSTERINGS, NOISE, Clustering, cluster, internal_index, knee_clusters
from conceptlens.rootcause.directions import DIRECTIONS, direction_features, direction_scores
from conceptlens.rootcause.features import TABLE_EXTRACTORS, concept_scores, with_labels
from conceptlens.rootcause.grid import HUDD, Pipeline, PipelineResult, choose, grid, points, run_grid
from conceptlens.rootcause.images import IMAGE_EXTRACTORS, ImageFeatures, ImageFeatureSet
from conceptlens.rootcause.reduce import REDUCTIONS, reduce, sample_rows

__all__ = ["CLUSTERINGS", "DIRECTIONS", "HUDD", "IMAGE_EXTRACTORS", "NOISE", "REDUCTIONS", "TABLE_EXTRACTORS", "Card", "Clustering",
           "ImageFeatureSet", "ImageFeatures", "Pipeline", "PipelineResult", "add_concepts", "build_cards", "choose", "cluster",
           "concept_scores", "describe", "direction_features", "direction_scores", "grid", "internal_index", "knee_clusters", "points", "reduce", "run_grid",
           "sample_rows", "with_labels"]
