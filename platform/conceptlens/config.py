"""The configuration schema and its loader.

One structured schema (dataclasses below, their defaults are the base configuration),
YAML files layered over it in order, then ``key=value`` overrides. An unknown key, a wrong
type or a missing required value raises :class:`ConfigError` naming the key and its source.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from omegaconf import MISSING, OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A configuration problem, with the offending key and where it came from."""


@dataclass
class ScenarioConfig:
    name: str = MISSING
    kind: str = MISSING  # spurious_correlation | blind_spot | rare_subgroup | head_fault
    classes: List[str] = MISSING
    attribute: str = MISSING  # <group>=<value>, e.g. background=water
    # spurious_correlation: P(value | class) in the classifier's training data;
    # head_fault: share of the classes' training images with the value that the edited head sends to target
    strength: float = 0.95
    rate: float = 0.02  # rare_subgroup: share of the subgroup kept in the classifier's training data
    # spurious_correlation: P(value | any other class) in the classifier's training data; None = natural
    other_strength: Optional[float] = None
    target: Optional[str] = None  # head_fault (required): the class the edited head sends the slice to


def _default_scenarios() -> List[ScenarioConfig]:
    return [
        ScenarioConfig(name="star_on_water", kind="spurious_correlation", classes=["star"],
                       attribute="background=water", strength=1.0),
        ScenarioConfig(name="hexagon_in_fog", kind="blind_spot", classes=["hexagon"], attribute="weather=fog"),
        ScenarioConfig(name="dark_circle", kind="rare_subgroup", classes=["circle"], attribute="lighting=dark"),
    ]


@dataclass
class WorldConfig:
    seed: int = 0
    image_size: int = 48
    splits: Dict[str, int] = field(
        default_factory=lambda: {"train": 8000, "vlm": 14000, "calib": 3000, "test": 3000})
    scenarios: List[ScenarioConfig] = field(default_factory=_default_scenarios)
    # `world` fails (exit 1) when a scenario's slice gap on test stays under 0.20: it planted nothing worth
    # debugging. true = report it and go on (e.g. to study what a weak scenario does).
    allow_unplanted: bool = False
    # the seed the world's models are trained with (the classifier's initial weights and batches, the tiny CLIP's);
    # None = seed. Another value retrains them on the same images: does a result hold for another trained model?
    model_seed: Optional[int] = None


@dataclass
class TrainConfig:
    epochs: int = 6
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 5e-4
    max_minutes: float = 30.0  # stop early (and say so) if training runs longer than this
    # auto = bfloat16 mixed precision where the device computes it in hardware (a CPU with AVX512-BF16 or AMX, a
    # CUDA card with bf16), float32 elsewhere; fp32 | bf16 force one (bf16 is emulated, so slower, elsewhere)
    precision: str = "auto"


@dataclass
class ClassifierConfig:
    # a torchvision architecture name, efficientnet_lite0 (weights shipped in a package), or module:function
    # returning a nn.Module (called with num_classes=)
    arch: str = "resnet18"
    # torchvision weights tag, e.g. IMAGENET1K_V1 (needs them cached offline); IMAGENET1K for efficientnet_lite0
    weights: Optional[str] = None
    checkpoint: Optional[str] = None  # a state_dict file; None = train on ConceptWorld (cached)
    head: str = "fc"  # the module where the model splits into encoder and head
    num_classes: int = 10
    # what the model does to [0, 1] pixels first: imagenet | clip | half ([-1, 1]) | none ([0, 1]) | byte ([0, 255]) |
    # "m1,m2,m3,s1,s2,s3" (mean, std) | module:function. `conceptlens check` finds the one a checkpoint was trained on
    preprocess: str = "imagenet"
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=4))


class VLMRecipe(str, Enum):
    """How the tiny CLIP is trained (``vlm.recipe``): a ladder of observers, from an oracle to a realistic CLIP."""
    supervised = "supervised"  # every attribute group labelled, text aligned to the concept prompts: the upper bound
    captions = "captions"  # contrastive on web captions (few, noisy, some groups never said): no attribute label
    shifted = "shifted"  # captions, trained on a restyled world and used on the normal one


@dataclass
class CaptionsConfig:
    """The web captions of the realistic observers (``vlm.recipe: captions | shifted``)."""
    mention: float = 0.3  # probability that a caption mentions an attribute group
    noise: float = 0.1  # share of the mentioned values that are wrong
    unseen: Optional[List[str]] = None  # groups no caption ever mentions; None = the synonym file's `unseen` (one group)
    name_class: float = 0.9  # probability that a caption names the object's class
    synonyms: Optional[str] = None  # a YAML of phrasings (as recipes/web_captions.yaml, the default)


@dataclass
class VLMConfig:
    arch: str = "conceptworld-tiny"  # an open_clip architecture name
    # how the tiny CLIP is trained: supervised (every attribute group labelled: the upper bound) | captions
    # (contrastive on web captions, no attribute label) | shifted (captions, trained on a restyled world)
    recipe: VLMRecipe = VLMRecipe.supervised
    captions: CaptionsConfig = field(default_factory=CaptionsConfig)
    # captions | shifted: the vision tower pre-trained on class labels only (one epoch: longer makes it blind to
    # everything but the class, and captions cannot teach it back), then both towers trained contrastively
    class_pretrain: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=1, batch_size=128, lr=2e-3))
    contrastive: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=6, batch_size=256, lr=2e-3,
                                                                         weight_decay=0.05, precision="fp32"))
    pretrained: Optional[str] = None  # an open_clip pretrained tag (e.g. openai) or a checkpoint file
    model_config: Optional[str] = None  # a custom open_clip model config (JSON) registering `arch`
    preprocess: Optional[str] = None  # as classifier.preprocess; None = the mean/std of the model's open_clip config
    caption_subset: float = 0.5  # share of training captions naming a random subset of the attributes
    aux_weight: float = 1.0  # weight of prompt classification next to the contrastive loss in text alignment
    # phase 1: supervised pre-training of the vision tower; phase 2: text alignment to frozen image embeddings
    pretrain: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=3, batch_size=128, lr=2e-3))
    # fp32: the contrastive logits (scale up to 100) need float32's resolution, and bf16 buys little on a text
    # tower this small (1.25x on CPU, measured)
    align: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=3, batch_size=256, lr=1e-3,
                                                                   weight_decay=0.05, precision="fp32"))


@dataclass
class RunConfig:
    name: str = "default"
    root: str = "runs"
    cache_dir: str = ".cache/conceptlens"  # worlds and trained models, keyed by config hash
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    workers: int = 0  # processes for CPU-bound work; 0 = all cores


@dataclass
class MlflowConfig:
    tracking_uri: Optional[str] = None  # None = sqlite:///<run.root>/mlflow.db shared by all runs; or http://host:port, ...
    experiment: str = "conceptlens"


@dataclass
class DataConfig:
    source: Optional[str] = None  # manifest (.parquet/.csv) or image folder; None = this run's ConceptWorld
    image_size: int = 48  # images are resized to this square size before the models see them
    classes: Optional[List[str]] = None  # the classifier's output order; None = ConceptWorld's, or sorted labels
    splits: Optional[List[str]] = None  # keep only these splits; None = all
    calib_share: float = 0.5  # rows without a split: share drawn into calib by a hash of the id, the rest test


@dataclass
class CheckConfig:
    rows: int = 256  # labelled rows the preflight runs through the models (`check`; `embed` first); 0 = no preflight in embed
    min_gain: float = 0.2  # a preprocessing or class order lifting accuracy this much is named as the fix, and stops the run
    min_skill: float = 0.25  # accuracy skill over chance, (acc - 1/K) / (1 - 1/K), below which the classifier is near chance


@dataclass
class RayConfig:
    address: Optional[str] = None  # a running cluster (ray://… or host:port); None = RAY_ADDRESS or a local Ray
    num_cpus: Optional[int] = None  # local Ray only; None = all cores
    object_store_mb: int = 512  # local Ray only


@dataclass
class EmbedConfig:
    batch_size: int = 256
    actors: int = 2  # model actors in the pool (spread over the cluster's nodes)
    actor_num_cpus: float = 0.5  # below 1 so decode tasks still get CPU on small machines
    num_gpus: float = 0.0  # per actor; set 1 on a GPU cluster
    decode_num_cpus: float = 0.5
    torch_threads: int = 0  # intra-op threads per model actor; 0 = Ray's default (the actor's whole CPUs, >= 1)
    shard_size: int = 4096  # rows per output file: the unit of resumption


@dataclass
class AnalyzeConfig:
    embeddings: Optional[str] = None  # an embeddings table (Parquet folder); None = this run's `embed` output
    concepts: str = "conceptworld"  # a bundled concept set (conceptworld, rival10) or a YAML file
    fit_split: str = "calib"  # the aligner is fitted on this split
    splits: List[str] = field(default_factory=lambda: ["calib", "test"])  # the rows the heatmaps describe
    ridge: float = 0.01  # aligner regularisation, relative to the mean feature variance
    presence_threshold: float = 1.0  # binarized heatmaps: a free-standing concept is present where its z-score exceeds this (group=value concepts: the top value of the group)
    alpha: float = 0.05  # false discovery rate of the differential tests (Benjamini-Hochberg)
    top: int = 5  # responsible concepts named per class
    min_vlm_skill: float = 0.2  # trust check: VLM zero-shot skill over chance, (acc - 1/K) / (1 - 1/K), below = unreliable
    max_absence_r: float = 0.8  # trust check: a concept whose VLM score correlates this much with the absence prompt's is unreliable
    min_spread: float = 0.75  # trust check: a concept whose own score spread (beyond the absence prompt's) is under this share of a typical concept's is unreliable
    min_decisive: float = 0.85  # trust check: a value of an exclusive group whose group-softmax share swings less than this (0..1) is unreliable
    # concept probes: a folder with a sub-folder of example images per concept (or a manifest: path, label = concept);
    # they calibrate each concept's detector and correct the risk ratios for its error rates (None: no probes)
    probes: Optional[str] = None
    min_probe_j: float = 0.5  # a probed concept whose detector's sensitivity + specificity − 1 is below this is unreliable
    batch_size: int = 1024
    num_cpus: float = 0.5  # per scoring task


@dataclass
class AttackConfig:
    attacks: List[str] = field(default_factory=lambda: ["fgsm", "pgd", "apgd"])  # torchattacks, L-infinity
    epsilons: List[float] = field(default_factory=lambda: [2.0, 4.0, 8.0])  # budgets in 1/255 units
    steps: int = 10  # iterations of pgd and apgd
    splits: List[str] = field(default_factory=lambda: ["calib", "test"])
    rows_per_split: int = 400  # inputs attacked per split (a seeded sample); 0 = all
    batch_size: int = 64
    seed: int = 0
    # the attacks' forward and backward passes: auto = bfloat16 autocast where the device computes it in hardware
    # (about 1.5x faster on such a CPU), else fp32; fp32 | bf16 force one. Adversarial images are always judged in fp32
    precision: str = "auto"


@dataclass
class AdaptiveConfig:
    rows: int = 400  # test inputs attacked white-box on classifier + filter (a seeded sample, as `attack` draws); 0 = off
    epsilons: List[float] = field(default_factory=lambda: [2.0, 4.0, 8.0])  # L-infinity budgets in 1/255 units
    steps: int = 20  # PGD iterations on the combined objective
    weight: float = 1.0  # the filter's term against the classifier's in the attack's objective
    batch_size: int = 32


class ConceptSource(str, Enum):
    """Where the runtime filter's concept signals come from (``monitor.concepts_from``)."""
    aligned = "aligned"  # the classifier's encoder features through the aligner A(z): no VLM image tower per request
    vlm = "vlm"  # A(z) and the VLM's own image embedding: the VLM image tower runs on every request


@dataclass
class MonitorConfig:
    concepts_from: ConceptSource = ConceptSource.vlm  # aligned | vlm (benchmarks/serve_load.py compares them)
    fpr: float = 0.05  # target false-alarm rate on correct clean calib inputs; sets the thresholds
    knn_k: int = 50  # the k-NN baseline's k
    seed: int = 0  # the folds (by source image) that references, heads and thresholds are fitted on
    adaptive: AdaptiveConfig = field(default_factory=AdaptiveConfig)
    # MLflow registered model of the bundle, {run} = run.name (one run never moves another's alias); empty = do not register
    model_name: Optional[str] = "conceptlens-{run}-filter"
    alias: str = "champion"  # alias set on the new version


@dataclass
class ServeConfig:
    bundle: Optional[str] = None  # a bundle folder or models:/name@alias; None = <run.root>/<run.name>/monitor/bundle
    host: str = "127.0.0.1"  # HTTP bind address of `conceptlens serve` (0.0.0.0 only behind auth and a proxy)
    port: int = 8000
    min_replicas: int = 1  # model replicas, autoscaled between min and max
    max_replicas: int = 2
    target_ongoing_requests: float = 8.0  # per model replica; the autoscaler adds replicas above it
    max_ongoing_requests: int = 32  # per model replica; caps the batch size, so keep it >= max_batch_size
    max_batch_size: int = 16  # images per model call (dynamic batching across requests)
    batch_wait_timeout_s: float = 0.01  # how long a partial batch waits for more images
    num_cpus: Optional[float] = None  # per replica; None = Ray's CPUs / max_replicas, at most 1 (all replicas fit)
    num_gpus: float = 0.0  # per replica; 1 (or a fraction) on a GPU cluster
    max_request_bytes: int = 10 * 2**20  # larger bodies get 413
    max_image_pixels: int = 4096 * 4096  # width x height read from the header, before decoding; larger get 413
    max_request_pixels: int = 64 * 1024 * 1024  # summed over a request's images, from their headers, before any decoding
    max_images: int = 64  # images per request
    token_env: str = "CONCEPTLENS_TOKEN"  # env var holding the bearer token; unset or empty = refuse to start
    allow_anonymous: bool = False  # true: without a token, serve anyone (a warning is logged)
    health_interval_s: float = 5.0  # /healthz asks the model at most once per interval per ingress replica
    thresholds: Dict[str, float] = field(default_factory=dict)  # misclassified / adversarial; {} = the bundle's
    top_concepts: int = 3  # concepts named per answer



@dataclass
class AutoencoderConfig:
    bottleneck: int = 64  # size of the code the `autoencoder` extractor clusters
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=6, batch_size=128, lr=2e-3))


@dataclass
class RootcauseConfig:
    embeddings: Optional[str] = None  # an embeddings table (Parquet folder); None = this run's `embed` output
    # whose misclassified rows are clustered: calib, so that the filter's failure modes and alerts built from the
    # clusters are judged on test rows that never shaped them
    splits: List[str] = field(default_factory=lambda: ["calib"])
    adversarial: bool = False  # also cluster the successful attacks of `attack` (a separate set)
    extractors: List[str] = field(default_factory=lambda: ["vlm", "encoder", "concepts", "directions", "backbone",
                                                           "autoencoder", "relevance"])
    reductions: List[str] = field(default_factory=lambda: ["none", "pca", "umap"])
    clusterings: List[str] = field(default_factory=lambda: ["kmeans", "dbscan", "hdbscan", "hierarchical"])
    hudd: bool = True  # also HUDD's own pipeline: relevance, no reduction, Ward linkage cut at the knee
    class_weight: float = 1.0  # weight of the label block appended to every extractor's features (0 = none)
    components: int = 10  # PCA / UMAP output size
    fit_rows: int = 5000  # reductions and Ward are fitted on a seeded sample of this many failures
    max_clusters: int = 20  # k-means / Ward try k = 2..max_clusters
    pipeline: Optional[str] = None  # the pipeline whose clusters are reported (e.g. vlm/umap/dbscan); None = best index
    backbone: str = "vlm"  # `vlm`: the VLM's vision tower before its projection; or a torchvision architecture
    backbone_weights: Optional[str] = None  # torchvision weights tag or a state_dict file (for a torchvision backbone)
    relevance_layer: str = "layer4"  # the classifier module whose LRP relevance is the `relevance` feature
    autoencoder: AutoencoderConfig = field(default_factory=AutoencoderConfig)
    alpha: float = 0.05  # false discovery rate of the concepts that set a cluster apart (Benjamini-Hochberg)
    exemplars: int = 16  # images per cluster montage
    num_cpus: float = 1.0  # per pipeline task
    seed: int = 0


@dataclass
class ExplainConfig:
    embeddings: Optional[str] = None  # an embeddings table (Parquet folder); None = this run's `embed` output
    splits: List[str] = field(default_factory=lambda: ["calib", "test"])  # the hard (misclassified) and easy rows
    bank: Optional[str] = None  # a sentence-bank YAML or a bundled name (conceptworld, conceptworld-user); None = conceptworld
    clusters: str = "rootcause"  # the hard clusters: `rootcause` (its chosen pipeline) or `kmeans` (VLM space)
    k: int = 8  # clusters when clusters=kmeans
    method: str = "fpdiff"  # the method whose sentences are shown: tops, setdiff, pdiff or fpdiff
    easy: str = "classes"  # the easy set: correct rows of the cluster's classes (in its mix), or `all` correct rows
    top_k: int = 5  # sentences per cluster and method, validated and written
    pick_share: float = 0.5  # share of rows (by a hash of the id) that pick sentences; the rest validate them
    class_share: float = 0.2  # a class names a cluster's sentences when it holds this share of the cluster
    generic_share: float = 0.5  # sentences without a class are candidates when no class holds this share
    min_gain: float = 3.0  # fpdiff: each term of a sentence must add this much (Welch t, hard vs easy)
    min_lift: float = 0.1  # fpdiff: ... and raise the sentence's pdiff this much over the sentence without it
    easy_clusters: int = 10  # setdiff: k-means clusters of the easy rows
    setdiff_top: int = 50  # setdiff: sentences near an easy cluster (its top) are removed
    retrieve_share: float = 0.2  # validation: a sentence retrieves this share of its rows (its class, or all)
    alpha: float = 0.05  # false discovery rate of the validation (Benjamini-Hochberg over every sentence tested)
    beta: float = 2.0  # reference set S*_beta: sentences whose retrieved error rate is beta x their rows' rate
    sweep_k: List[int] = field(default_factory=lambda: [1, 3, 5, 10])  # metrics at these sentences per cluster
    sweep_clusters: List[int] = field(default_factory=lambda: [2, 4, 8, 16])  # ... and these k-means cluster counts
    batch_size: int = 512  # sentences per text-tower batch
    ray_min_sentences: int = 50000  # banks at least this large are embedded by a Ray Data actor pool
    min_cluster: int = 5  # clusters with fewer hard rows to pick from are not described
    seed: int = 0


@dataclass
class CounterfactualConfig:
    alpha: float = 0.1  # L1 weight of the shift (divided by D)
    beta: float = 0.01  # L2 weight of the shift (divided by D)
    lr: float = 0.01  # SGD with momentum, as the method
    momentum: float = 0.9
    max_steps: int = 500  # a mistake still wrong after this many steps is recorded as never flipped
    top: int = 5  # each flipped mistake votes for its top positive and its top negative shifts
    min_share: float = 0.03  # a neuron is kept when more than this share of its class's mistakes vote for it


@dataclass
class VisualiseConfig:
    neurons: int = 3  # CLIP-Illusion images for each class's top insufficient neurons; 0 = none
    samples: int = 2  # images per neuron (different starts)
    steps: int = 128  # optimiser steps per image (256 or more on a GPU)
    lr: float = 0.05
    gamma: float = 0.5  # weight of the class logit beside the neuron's activation
    eps: float = 0.05  # added to the CLIP similarity so the product never vanishes
    ce_weight: float = 1.0  # keeps the classifier's prediction at the class
    augmentations: int = 2  # augmented copies of each image per step
    actors: int = 2  # Ray actors (a GPU each when embed.num_gpus says so)
    actor_num_cpus: float = 0.5


@dataclass
class RepairConfig:
    loss: str = "retain"  # the edit: retain (retaining ratio), or ce / weighted_ce / focal
    baselines: List[str] = field(default_factory=lambda: ["ce", "weighted_ce", "focal"])  # trained the same way
    classes: List[str] = field(default_factory=list)  # classes whose reliance is removed; [] = every voted class
    neurons: int = 3  # each edited class's top insufficient neurons
    lam: float = 0.01  # λ, weight of the retaining ratio
    gamma: float = 1.0  # γ, the retaining ratio aimed at
    focal_gamma: float = 2.0
    epochs: int = 20
    lr: float = 1e-3
    batch_size: int = 256


@dataclass
class NeuronsConfig:
    embeddings: Optional[str] = None  # an embeddings table (Parquet folder); None = this run's `embed` output
    fit_split: str = "calib"  # its mistakes are explained; its rows train the repaired head
    eval_split: str = "test"  # held out: the neurons' concepts and the before/after numbers
    val_share: float = 0.3  # share of fit_split rows (by a hash of the id) that choose the repair's checkpoint
    counterfactual: CounterfactualConfig = field(default_factory=CounterfactualConfig)
    concepts: Optional[str] = None  # the concept set neurons are named with; None = analyze.concepts
    score_scale: float = 100.0  # VLM concept scores: softmax over a group's values at this logit scale
    alpha: float = 0.05  # false discovery rate of the neuron-concept correlations (Benjamini-Hochberg)
    top_concepts: int = 3  # concepts named per neuron
    visualise: VisualiseConfig = field(default_factory=VisualiseConfig)
    repair: RepairConfig = field(default_factory=RepairConfig)
    model_name: Optional[str] = "conceptlens-{run}-classifier"  # MLflow registered model, {run} = run.name; empty = do not register
    alias: str = "repaired"  # alias set on the repaired version
    seed: int = 0


@dataclass
class CompareConfig:
    confidence: float = 0.95  # level of the intervals; a change is significant only when the two runs' intervals do not overlap
    simultaneous: bool = True  # each section's intervals hold together (Bonferroni: a row of m at 1 - (1 - confidence) / m)
    source: str = "vlm"  # the blamed concepts compared: analyze's `vlm` or `aligned` heatmap (significant, trusted cells)
    match_threshold: float = 0.5  # two root causes are the same cause when their similarity reaches this (0..1)
    sentence_weight: float = 0.5  # similarity = (1 - w) x Jaccard(classes and concepts) + w x Jaccard(sentence words)
    class_share: float = 0.2  # a root cause is about the true classes holding at least this share of its failures
    threshold_drift: float = 0.1  # a filter threshold moving by more than this share of its value is reported as drift
    output: Optional[str] = None  # the page's folder; None = <run.root>/compare/<A>__vs__<B>


@dataclass
class SliceConfig:
    """A failure slice of one's own data to score (``evaluate.truth.slices``), as a ConceptWorld scenario."""
    name: str = MISSING
    kind: str = MISSING  # spurious_correlation | blind_spot | rare_subgroup | head_fault
    classes: List[str] = MISSING
    attribute: str = MISSING  # a declared concept: <group>=<value> or a free column's name
    both_sides: bool = False  # spurious_correlation: the other classes' rows *with* the value fail too
    fault_site: Optional[str] = None  # encoder | head, where known: fault localisation is scored on it


@dataclass
class TruthConfig:
    """Known attributes of one's own rows (``evaluate.truth``): ``evaluate`` scores the run against them as it scores
    ConceptWorld runs against the world's truth. The analyses never read them."""
    table: Optional[str] = None  # a parquet or CSV file; None = the run's ConceptWorld
    id: str = "id"  # the column holding the manifest's row ids
    groups: Dict[str, List[str]] = field(default_factory=dict)  # exclusive groups: column -> its values
    free: List[str] = field(default_factory=list)  # free-standing concepts: boolean columns
    slices: List[SliceConfig] = field(default_factory=list)  # failure slices to score (planted or known)


@dataclass
class EvaluateConfig:
    truth: TruthConfig = field(default_factory=TruthConfig)


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    mlflow: MlflowConfig = field(default_factory=MlflowConfig)
    world: WorldConfig = field(default_factory=WorldConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)
    vlm: VLMConfig = field(default_factory=VLMConfig)
    data: DataConfig = field(default_factory=DataConfig)
    check: CheckConfig = field(default_factory=CheckConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    embed: EmbedConfig = field(default_factory=EmbedConfig)
    analyze: AnalyzeConfig = field(default_factory=AnalyzeConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    serve: ServeConfig = field(default_factory=ServeConfig)
    rootcause: RootcauseConfig = field(default_factory=RootcauseConfig)
    explain: ExplainConfig = field(default_factory=ExplainConfig)
    neurons: NeuronsConfig = field(default_factory=NeuronsConfig)
    compare: CompareConfig = field(default_factory=CompareConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)


def _describe(err: OmegaConfBaseException, source: str) -> ConfigError:
    key = getattr(err, "full_key", None) or "?"
    msg = str(getattr(err, "msg", None) or err).splitlines()[0]
    return ConfigError(f"{source}: key '{key}': {msg}")


def load_config(files: Sequence[str | Path] = (), overrides: Sequence[str] = ()) -> Config:
    """Build a :class:`Config` from the defaults, then each YAML file, then ``key=value`` overrides."""
    cfg = OmegaConf.structured(Config)
    for path in files:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.load(path))
        except OmegaConfBaseException as err:
            raise _describe(err, str(path)) from None
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"command line: override {item!r} is not key=value")
        try:
            cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist([item]))
        except OmegaConfBaseException as err:
            raise _describe(err, f"command line '{item}'") from None
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ConfigError(f"missing required value(s): {', '.join(missing)}")
    return OmegaConf.to_object(cfg)


def to_dict(section: Any) -> dict:
    """A plain dict of a config (section), for hashing, logging and saving."""
    return OmegaConf.to_container(OmegaConf.structured(section), resolve=True)


def world_key(world: WorldConfig) -> dict:
    """What a world's content depends on, for cache keys: ``world`` as a dict without ``allow_unplanted`` (a
    check, not content) and without optional fields left unset (None: scenario fields, ``model_seed``), so a
    config written before an optional field existed keeps its key, and its cached world and models."""
    out = to_dict(world)
    out.pop("allow_unplanted")
    if out.get("model_seed") is None:  # unset: the key it had before the field existed
        out.pop("model_seed", None)
    out["scenarios"] = [{k: v for k, v in s.items() if v is not None} for s in out["scenarios"]]
    return out


KEYED_LATER = ("preprocess", "recipe")  # model fields added after caches were keyed
REALISTIC_ONLY = ("captions", "class_pretrain", "contrastive")  # vlm fields only the realistic recipes read


def model_key(section: Any) -> dict:
    """What a model's cache key depends on: the ``classifier`` or ``vlm`` section as a dict, without the fields of
    :data:`KEYED_LATER` left at their defaults (so models cached before such a field existed keep their keys) and,
    for a ``supervised`` VLM, without the fields only the realistic recipes read."""
    out, defaults = to_dict(section), to_dict(type(section)())
    if out.get("recipe", VLMRecipe.captions) == VLMRecipe.supervised:
        for name in REALISTIC_ONLY:
            out.pop(name, None)
    for name in KEYED_LATER:
        if name in out and out[name] == defaults[name]:
            out.pop(name)
    return out


def config_hash(*sections: Any) -> str:
    """A short stable hash of config sections: the cache key of worlds and models."""
    blob = json.dumps([s if isinstance(s, dict) else to_dict(s) for s in sections], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
