"""params.yaml sections as typed, frozen models with defaults.

params.yaml is the only place a knob lives. Each step reads one section through
`load_section(params_path, "train")` (or `load_params` for all of them); a missing
file or section gives the defaults below, and an unknown key is an error that names
the section and the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, model_validator


class Section(BaseModel):
    """Base of every params.yaml section: frozen, unknown keys rejected."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def with_overrides(self, **overrides: Any) -> Section:
        """Return a copy with some fields replaced (validated like the file)."""
        data = self.model_dump()
        data.update({k: v for k, v in overrides.items() if v is not None})
        return type(self)(**data)


class IngestConfig(Section):
    text_columns: list[str] = ["title", "genres", "overview"]  # item columns joined into the text modality
    text_separator: str = ". "  # joins the text columns (empty ones skipped)
    max_rejected_share: float = 0.2  # fail the step when more rows than this are rejected (per file)
    max_image_pixels: int = 40_000_000  # decompression-bomb guard (width * height)
    max_image_bytes: int = 20_000_000  # larger image files are rejected
    check_images: bool = True  # fully decode every image at ingest (False: header check only)
    context_columns: list[str] = ["hour"]  # interaction columns kept as context when present (report lists absent ones)
    dedupe: Literal["first", "last"] = "last"  # which duplicate interaction is kept


class DemoConfig(Section):
    seed: int = 7  # everything in the demo dataset derives from this
    users: int = 1000
    items: int = 1000
    interactions: int = 40_000
    late_item_share: float = 0.1  # share of items that appear only late (cold start)
    late_from: float = 0.8  # late items appear after this fraction of the time range
    image_size: int = 64  # rendered image side in pixels
    days: int = 180  # time range of the interactions
    missing_image_share: float = 0.02  # items without a picture (image modality masked)
    colour_in_text_share: float = 0.5  # items whose text names their colour (else only the image shows it)
    taste_strength: float = 1.0  # scales every user preference (higher: a sharper planted signal)
    popularity_weight: float = 1.0  # weight of the items' latent log-popularity in the scores
    night_strength: float = 1.0  # how strongly the hour context (night) shifts style tastes
    shift_factor: Literal["colour", "shape", "pattern", "category", "style", "material"] = "colour"
    shift: int = 3  # simulator taste shift: the shift_factor preferences rotate by this many values


class SplitConfig(Section):
    protocol: Literal["random-811", "temporal-loo", "global-time", "cold-items"] = "random-811"
    seed: int = 2026  # random-811 / cold-items randomness
    valid_share: float = 0.1  # global-time: share of interactions (latest before test) for valid
    test_share: float = 0.1  # global-time: share of latest interactions for test; cold-items: share of items held out
    min_user_interactions: int = 3  # users with fewer go entirely to train


class FeaturizeConfig(Section):
    text_encoders: list[str] = ["minilm", "tfidf"]  # minilm | tfidf | hf:<folder> | none
    image_encoders: list[str] = ["effnet-lite0", "color"]  # effnet-lite0 | tv:<name>[@weights] | color | none
    vector_sources: list[str] = []  # vectors:<path>[#column] entries (precomputed modalities)
    text_columns: list[str] = []  # empty: ingest's joined `text`; else these item columns, joined below
    text_separator: str = ". "  # joins text_columns (empty ones skipped)
    tfidf_dim: int = 128  # TruncatedSVD output dimension
    max_text_tokens: int = 256  # transformer encoders truncate longer texts (MiniLM was trained at 256)
    batch_size: int = 16  # items per forward pass: small batches keep activations in cache (2x on 2 cores vs 64)
    num_workers: int = 2  # DataLoader workers decoding images (0: decode in the main process)
    torch_threads: int = 2
    text_int8: bool = True  # transformer text encoders in int8 (smoothed; cosine >= 0.99 to fp32); false: fp32
    text_runtime: Literal["onnx", "torch"] = "onnx"  # BERT text encoders on ONNX Runtime (fused graph, built once, cached) or torch
    image_runtime: Literal["onnx", "torch"] = "onnx"  # EffNet-Lite0 on ONNX Runtime (folded graph, built once, cached) or torch
    max_image_pixels: int = 40_000_000  # decompression-bomb guard, as at ingest
    max_image_bytes: int = 20_000_000  # larger image files are masked
    cache_dir: str = ""  # empty: <out>/../.feature-cache next to the output
    normalize: bool = True  # L2-normalise every row
    vectors_min_coverage: float = 0.5  # vectors:<path> covering fewer catalogue items is an error
    quality_label_column: str = "genres"  # intrinsic check: neighbours sharing a label ('|'-separated)
    quality_k: int = 10  # neighbours per item in the intrinsic check


class TrainConfig(Section):
    seed: int = 2026
    text_encoder: str = "minilm"  # a featurize output, or "none"
    image_encoder: str = "effnet-lite0"  # a featurize output, or "none"
    extra_modalities: list[str] = []  # other featurize outputs, e.g. "vectors:audio"
    fusion: Literal["concat", "mean", "gated", "attention"] = "gated"
    dim: int = 128  # shared embedding dimension
    proj_hidden: int = 0  # hidden width of the per-modality projection MLP (0 = linear)
    feature_pca: int = 128  # wider modalities are first mapped on their top principal axes (0 = off)
    use_id_emb: bool = True  # item id embeddings next to the content path
    id_dropout: float = 0.3  # probability an item's id embedding is dropped in training
    modality_dropout: float = 0.1  # probability a modality is dropped per item in training
    n_layers: int = 2  # LightGCN layers on the user-item graph (0-4)
    knn_k: int = 10  # item-item kNN graph from content similarity (0 = off)
    knn_weight: float = 0.5  # mix of kNN-propagated item representation
    context_columns: list[str] = []  # interaction context columns entering the user representation
    loss: Literal["softmax", "sampled_softmax", "bpr"] = "softmax"
    temperature: float = 0.2  # cosine-score temperature of the softmax losses
    n_negatives: int = 256  # sampled softmax / BPR negatives per positive
    contrastive_weight: float = 0.0  # alignment between modalities
    lr: float = 3e-2
    weight_decay: float = 1e-6
    batch_size: int = 256  # rows per batch: users (full softmax, no context) or interactions (otherwise)
    max_steps_per_epoch: int = 64  # more batches than this: consecutive batches share one graph pass and optimizer step (0 = never)
    epochs: int = 60  # cap; early stopping usually ends sooner
    patience: int = 5  # epochs without validation NDCG@20 improvement
    recency_half_life: float = 0.0  # an interaction weighs 0.5^(user's newer ones / this) in the softmax targets, graph and EASE; 0 = all alike
    recency_choices: list[float] = [5.0, 20.0, 50.0]  # half-lives tried when recency_half_life is 0: one whose weighted EASE beats the binary one on validation by 2 standard errors is trained with; [] = off
    origin_weights: dict[str, float] = {"explored": 3.0, "organic": 3.0}  # merged feedback by origin (schema.ORIGINS): weight in the softmax targets, graph and EASE, like recency; others 1
    ease_lambda: float = 300.0
    ease_blend: float | None = None  # weight of EASE scores; None = chosen on validation; 0 = off
    ease_max_items: int = 10_000  # exact dense EASE up to this many items (~5 n^2 x 4 bytes while fitting); above, the sparse EASE
    ease_head_items: int = 2048  # sparse EASE: the most popular items, regressors of every item (time ~N^3 + N^2 n)
    ease_topk: int = 256  # sparse EASE: weights kept per item, largest magnitude (0 = all); 64 lost 6% of EASE alone on ml100k-mm
    valid_max_users: int = 2_000  # validation (early stopping, EASE blend) on a seeded sample of this many users (0 = all)
    cold_tower: bool = True  # separate content tower for items never seen in training
    cold_weight_decay: float = 1e-6  # L2 of the cold tower (content must generalise to unseen items)
    cold_offset: float = 1.0  # z-score handicap of never-trained items ranked among trained ones
    threads: int = 0  # torch CPU threads while training; 0 = automatic: 1 below 1M interactions (a result independent of the core count), else every CPU the process may use (affinity, pod CPU limit)
    # approximate top-k for known users: faiss IVF indexes saved in <model>/ann/ (a dense EASE blend is served exactly)
    ann_min_items: int = 100_000  # catalogues this large get the index (0 = never); smaller ones are scored exactly
    ann_lists: int = 0  # k-means lists of the index (0 = 2 sqrt(items)): more = faster queries, slower build
    ann_probe: int = 32  # lists scanned per request: recall against latency


class SearchSpace(Section):
    """The AutoML search space (`search.space`): a list of choices, or a [low, high] range.

    Encoder choices not present in the features folder are dropped at search time; the
    train section's own values are always added, so the default config is a point of the space.
    """

    text_encoder: list[str] = ["minilm", "tfidf", "none"]  # choices (featurize outputs or "none")
    image_encoder: list[str] = ["effnet-lite0", "color", "none"]  # choices (featurize outputs or "none")
    fusion: list[str] = ["concat", "mean", "gated", "attention"]  # choices
    n_layers: list[int] = [0, 4]  # [low, high] LightGCN layers
    knn_k: list[int] = [0, 10, 20]  # choices; 0 = no item-item kNN graph
    knn_weight: list[float] = [0.0, 1.0]  # [low, high]
    dim: list[int] = [32, 64, 128]  # choices
    lr: list[float] = [1e-3, 5e-2]  # [low, high], log scale
    weight_decay: list[float] = [1e-8, 1e-4]  # [low, high], log scale
    id_dropout: list[float] = [0.0, 0.6]  # [low, high]
    modality_dropout: list[float] = [0.0, 0.4]  # [low, high]
    loss: list[str] = ["softmax", "bpr"]  # choices
    temperature: list[float] = [0.05, 0.5]  # [low, high], log scale
    contrastive_weight: list[float] = [0.0, 0.5]  # [low, high]
    ease_blend: list[float] = [0.0, 1.0]  # [low, high] fixed EASE weight (0 = EASE off)
    ease_blend_auto: bool = True  # also try "blend chosen on validation" (train.ease_blend: null)
    ease_lambda: list[float] = [50.0, 1000.0]  # [low, high], log scale
    epochs: list[int] = [10, 60]  # [low, high] epochs cap (early stopping may end sooner)
    ease_head_items: list[int] = [1024, 2048, 4096]  # choices; sparse EASE only (catalogues above train.ease_max_items)
    ease_topk: list[int] = [128, 256, 512]  # choices; sparse EASE only

    @model_validator(mode="after")
    def _check(self) -> SearchSpace:
        for name in SPACE_RANGES:
            bounds = getattr(self, name)
            if len(bounds) != 2 or bounds[0] > bounds[1]:
                raise ValueError(f"{name}: expected [low, high] with low <= high, got {bounds}")
            if name in SPACE_LOG and bounds[0] <= 0:
                raise ValueError(f"{name}: log-scale range needs low > 0, got {bounds}")
        for name in SPACE_CHOICES:
            if not getattr(self, name):
                raise ValueError(f"{name}: needs at least one choice")
        for name in ("fusion", "loss"):
            allowed = get_args(TrainConfig.model_fields[name].annotation)
            bad = [c for c in getattr(self, name) if c not in allowed]
            if bad:
                raise ValueError(f"{name}: unknown choices {bad}; allowed: {list(allowed)}")
        return self


SPACE_CHOICES = ("text_encoder", "image_encoder", "fusion", "knn_k", "dim", "loss",
                 "ease_head_items", "ease_topk")  # categorical fields
SPACE_RANGES = ("n_layers", "knn_weight", "lr", "weight_decay", "id_dropout", "modality_dropout",
                "temperature", "contrastive_weight", "ease_blend", "ease_lambda", "epochs")  # [low, high] fields
SPACE_LOG = ("lr", "weight_decay", "temperature", "ease_lambda")  # ranges sampled on a log scale


class SearchConfig(Section):
    enabled: bool = True  # False: train trains params.yaml's `train` as it is (the search writes an empty overlay)
    n_trials: int = 8  # trials this run adds to the study (shared among its workers; 0 = only write outputs)
    max_study_trials: int | None = None  # cap on the study's finished trials over all runs (a resumed run stops there)
    timeout: float | None = 150.0  # seconds per run (checked between trials); None = no time budget
    sampler: Literal["tpe", "random", "cmaes"] = "tpe"  # tpe is multivariate; cmaes needs the `cmaes` package
    pruner: Literal["median", "hyperband", "none"] = "median"  # on per-epoch validation NDCG@20
    prune_startup_trials: int = 3  # median: finished trials before any pruning
    prune_warmup_epochs: int = 3  # epochs a trial always runs before it can be pruned
    seed: int = 2026  # sampler seed
    storage: str = ""  # SQLAlchemy URL; empty = sqlite:///<out>/study.db
    study_name: str = "fusionrec"  # same name + storage = the same study (resume, shared workers)
    workers: int = 1  # local worker processes on the one study
    heartbeat_s: int = 30  # RDB heartbeat; a trial silent for 2x this (killed worker) is failed and retried once
    multi_objective: bool = False  # maximise NDCG@20 and minimise scoring latency (no pruning then)
    latency_budget_ms: float = 5.0  # chosen trial: best quality within this latency (one user, full ranking)
    space: SearchSpace = SearchSpace()


class EvaluateConfig(Section):
    ks: list[int] = [10, 20]  # cut-offs of recall/precision/ndcg/mrr/hit in metrics.json
    plot_ks: list[int] = [1, 5, 10, 20, 50]  # cut-offs of the metric-by-K plot
    baselines: list[str] = ["mostpop", "itemknn", "ease", "bpr-mf", "lightgcn", "vbpr", "content-knn"]
    baseline_params: dict[str, dict[str, Any]] = {}  # per baseline, e.g. {ease: {lam: 300}, itemknn: {k: 100}}
    baseline_budget_s: float = 1800.0  # a trained baseline (bpr-mf, lightgcn, vbpr) stops past this; reported as cut (0 = none)
    activity_buckets: list[int] = [20, 50, 150]  # train-interaction edges of user buckets
    batch_size: int = 512  # users scored per batch
    promote_metric: str = "ndcg@20"
    promote_tolerance: float = 0.005  # challenger may be this much worse (absolute) and still promote
    guard_metrics: list[str] = ["recall@20"]  # must also stay within the tolerance of the champion
    champion: str = ""  # evaluate output folder (or metrics.json) of the serving model; empty = none


class PackageConfig(Section):
    model_name: str = "fusionrec"  # BentoML model store tag name (serving loads <model_name>:latest)
    bentofile: str = "serving/bentofile.yaml"  # what `bentoml build` uses after `fusionrec package`


class ServeConfig(Section):
    host: str = "127.0.0.1"  # `fusionrec serve` binds here; 0.0.0.0 only inside a container
    port: int = 3000
    workers: int = 1  # processes; each one follows the shared state (items added at runtime, the champion)
    threads: int = 4  # request threads per worker (feedback waits on a disk sync)
    blas_threads: int = 1  # BLAS/torch threads per worker: one request's matrix-vector product is faster on 1
    access_log: bool = False  # BentoML's per-request access log line (costs CPU at high request rates)
    max_k: int = 100
    max_text_chars: int = 5000
    max_image_bytes: int = 5_000_000
    max_image_pixels: int = 25_000_000
    max_recent_items: int = 200
    feedback_url: str = ""  # SQLAlchemy URL; empty = sqlite:///$BENTOML_HOME/feedback.db (env FUSIONREC_FEEDBACK_URL wins)
    token_env: str = "FUSIONREC_TOKEN"  # env var holding the bearer token of write endpoints
    poll_interval_s: float = 2.0  # how often a replica reads the database for new items and a new champion; 0 = never
    model_cache: str = ""  # local folder for champions fetched from an object store; "" = $BENTOML_HOME/champions
    explore_share: float = 0.0  # share of each /recommend answer drawn from beyond the model's top-k (0 = off: answers as without exploration)
    explore_pool: int = 60  # explored items are drawn from the ranks just past the top-k: k .. k + explore_pool - 1
    explore_seed: int = -1  # seed of the exploration draws; -1 = fresh entropy per process
    explore_diverse: bool = True  # draw near misses unlike the chosen items more often (False: uniformly from the pool)
    rank_cache_users: int = 100_000  # known users whose ranking is kept per model version (default requests slice it); 0 = score every request


class MonitorConfig(Section):
    drift_share: float = 0.5  # share of drifted feedback columns that counts as feedback drift
    stattest: str = ""  # Evidently drift method for every feedback column; "" = Evidently picks per column
    stattest_threshold: float | None = None  # threshold of that method; None = Evidently's default
    embedding_drift_threshold: float = 0.55  # Evidently model-based embedding drift: ROC AUC above this drifts
    embedding_sample: int = 1000  # at most this many vectors per side enter an embedding drift check
    min_new_items: int = 20  # fewer new items in the current window: no new-item embedding check
    ctr_drop: float = 0.2  # relative click-through drop (current vs reference) that triggers retraining
    min_events: int = 200  # fewer current-window events: no decision
    persistence: int = 1  # consecutive monitor runs that must flag drift before retraining is due (1 = at once)
    reference_window: int = 2000  # first N feedback events after the current model's deployment
    current_window: int = 2000  # last N feedback events
    retrain_on: list[str] = ["feedback_drift", "ctr_drop", "interest_drift", "new_item_drift", "score_drift"]
    holdout_share: float = 0.2  # newest share of the merged feedback held out as the common holdout
    skip_after: int = 2  # an item shown this often to a user with no reaction merges as a "skip" negative; 0 = never
    min_holdout: int = 100  # fewer holdout rows: no challenger yet (a smaller holdout cannot tell two models apart)
    retrain_half_life: float = 16.0  # the challenger's train.recency_half_life, in interactions (0 = the train section's own)
    retrain_split: Literal["", "random-811", "temporal-loo", "global-time"] = "random-811"  # the challenger's split (its epoch and EASE blend); "" = split section's
    refit: bool = True  # a promoted challenger's recipe trains once more on all the merged data, holdout included, and that model ships
    pipeline_package: str = "pipelines/compiled/training.yaml"  # kfp pipeline submitted by --trigger kfp
    service_url: str = ""  # running service asked to reload after a promotion ("" = none)
    token_env: str = "FUSIONREC_TOKEN"  # env var with the bearer token of the service's reload endpoint
    models_root: str = ""  # where a promotion publishes for every replica (shared path or fsspec URI); "" = left where it was trained (kfp: /models of pipeline.models_pvc)
    keep_models: int = 3  # a promotion deletes the models_root folders of champions older than the last N promotions (0 = keep all)
    served_retention_days: float = 30.0  # each monitor run deletes served impressions older than this (0 = keep all)
    report_html_days: float = 7.0  # Evidently HTML (~4 MB a report) of older runs is deleted; JSON and decisions stay (0 = keep)


class SimulateConfig(Section):
    users: int = 200  # simulated users drawn from the demo ground truth
    rounds: int = 20  # each round every user requests once and clicks by taste
    k: int = 10  # recommendations per request
    shift_at: int = 10  # round at which tastes shift (-1 = never)
    shift_strength: float = 1.0  # how far tastes move (0 = none, 1 = fully to the shifted taste)
    dislike_prob: float = 0.05  # chance an unwanted shown item gets an explicit "dislike"
    organic: int = 1  # items each user also finds on their own per round (event "view", no request_id)
    concurrency: int = 4  # parallel simulated users (HTTP connections)
    timeout_s: float = 30.0  # per HTTP request
    seed: int = 11


class TaskResources(Section):
    """What one Kubeflow task asks of the cluster (Kubernetes quantities)."""

    cpu_request: str = "1"
    cpu_limit: str = "2"
    memory_request: str = "2G"
    memory_limit: str = "4G"


class PipelineConfig(Section):
    search_workers: int = 2  # Optuna workers: ParallelFor pods on the shared study, else processes in one search pod
    trials_per_worker: int = 5
    image: str = "ghcr.io/fusionrec/fusionrec"  # tag = package version
    study_secret: str = ""  # Kubernetes Secret holding the shared study's database URL; empty = the search runs in one pod
    study_secret_key: str = "study-url"  # the key of study_secret that holds the URL (as in the Secret fusionrec-db)
    state_secret: str = "fusionrec-db"  # Secret with the serving state's database URL, read by the promoting task; "" = package only
    state_secret_key: str = "feedback-url"  # the key of state_secret that holds the URL (the serving pods read the same)
    models_pvc: str = "fusionrec-models"  # claim the promoting task mounts at /models (the serving pods' mount); "" = none
    # Secret whose AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_ENDPOINT_URL keys the promoting task gets as
    # env, as the serving and monitor pods do (optional: absent, the pods start without them); "" = none
    object_store_secret: str = "fusionrec-object-store"
    retries: int = 2  # a failed task is retried this many times (pod evicted, node lost)
    retry_backoff: str = "60s"  # wait before the first retry (doubles each time)
    resources: dict[str, TaskResources] = {  # per step; "default" for steps not named
        "default": TaskResources(),
        "featurize": TaskResources(cpu_request="2", cpu_limit="4", memory_request="4G", memory_limit="8G"),
        "search": TaskResources(cpu_request="2", cpu_limit="4", memory_request="4G", memory_limit="8G"),
        "train": TaskResources(cpu_request="2", cpu_limit="4", memory_request="4G", memory_limit="8G"),
    }

    def task_resources(self, step: str) -> TaskResources:
        """The resources of one step: its own entry, else "default"."""
        return self.resources.get(step) or self.resources.get("default") or TaskResources()


class Params(Section):
    ingest: IngestConfig = IngestConfig()
    demo: DemoConfig = DemoConfig()
    split: SplitConfig = SplitConfig()
    featurize: FeaturizeConfig = FeaturizeConfig()
    train: TrainConfig = TrainConfig()
    search: SearchConfig = SearchConfig()
    evaluate: EvaluateConfig = EvaluateConfig()
    package: PackageConfig = PackageConfig()
    serve: ServeConfig = ServeConfig()
    monitor: MonitorConfig = MonitorConfig()
    simulate: SimulateConfig = SimulateConfig()
    pipeline: PipelineConfig = PipelineConfig()


S = TypeVar("S", bound=Section)
SECTIONS: dict[str, type[Section]] = {name: f.annotation for name, f in Params.model_fields.items()}  # type: ignore[misc]


class ConfigError(ValueError):
    """A params file or config file that cannot be used; the message says where."""


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _build(cls: type[S], data: dict[str, Any], where: str) -> S:
    try:
        return cls(**data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{where}: {problems}") from None


def load_params(path: Path | str | None = "params.yaml") -> Params:
    """Read every section of a params file; defaults where the file or a section is absent."""
    if path is None or not Path(path).exists():
        return Params()
    return _build(Params, _read_yaml(Path(path)), str(path))


def load_section(path: Path | str | None, name: str) -> Section:
    """Read one section (e.g. "train") of a params file."""
    if name not in SECTIONS:
        raise ConfigError(f"unknown params section {name!r}; known: {', '.join(SECTIONS)}")
    return getattr(load_params(path), name)


def load_config_file(path: Path | str, cls: type[S]) -> S:
    """Read a file holding one section's fields at the top level (e.g. best.yaml -> TrainConfig)."""
    return _build(cls, _read_yaml(Path(path)), str(path))


def dump_config(cfg: Section, path: Path | str) -> None:
    """Write a section as YAML that `load_config_file` reads back identically."""
    Path(path).write_text(yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False))


__all__ = [
    "ConfigError", "DemoConfig", "EvaluateConfig", "FeaturizeConfig", "IngestConfig", "MonitorConfig",
    "PackageConfig", "Params", "PipelineConfig", "SearchConfig", "SearchSpace", "Section", "ServeConfig",
    "SimulateConfig", "SplitConfig", "TrainConfig", "dump_config", "load_config_file", "load_params",
    "load_section",
]
