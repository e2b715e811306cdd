"""Method 3 (HUDD/SAFE, METHODS.md §3): clustering of failures into root causes. So far the pipeline's
last two stages: reductions (none, PCA, UMAP) and clusterings (k-means, DBSCAN, HDBSCAN, hierarchical) with
hyper-parameters chosen by one internal index; feature extractors, the Ray grid and `conceptlens rootcause`
are next."""
from conceptlens.rootcause.cluster import CLUSTERINGS, NOISE, Clustering, cluster, internal_index
from conceptlens.rootcause.reduce import REDUCTIONS, reduce, sample_rows

__all__ = ["CLUSTERINGS", "NOISE", "REDUCTIONS", "Clustering", "cluster", "internal_index", "reduce", "sample_rows"]
