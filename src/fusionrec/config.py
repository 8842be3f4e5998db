"""params.yaml sections as typed, frozen models with defaults.

params.yaml is the only place a knob lives. Each step reads one section through
`load_section(params_path, "train")` (or `load_params` for all of them); a missing
file or section gives the defaults below, and an unknown key is an error that names
the section and the key, so a typo never silently falls back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError


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
    items: int = 2000
    interactions: int = 50_000
    late_item_share: float = 0.1  # share of items that appear only late (cold start)
    late_from: float = 0.8  # late items appear after this fraction of the time range
    image_size: int = 64  # rendered image side in pixels
    days: int = 180  # time range of the interactions
    missing_image_share: float = 0.02  # items without a picture (image modality masked)
    colour_in_text_share: float = 0.5  # items whose text names their colour (else only the image shows it)
    taste_strength: float = 1.0  # scales every user preference (higher: a sharper planted signal)
    popularity_weight: float = 0.6  # weight of the items' latent log-popularity in the scores
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
    batch_size: int = 64
    num_workers: int = 2  # DataLoader workers decoding images (0: decode in the main process)
    torch_threads: int = 2
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
    dim: int = 64  # shared embedding dimension
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
    lr: float = 1e-3
    weight_decay: float = 1e-6
    batch_size: int = 1024
    epochs: int = 60  # cap; early stopping usually ends sooner
    patience: int = 5  # epochs without validation NDCG@20 improvement
    ease_lambda: float = 300.0
    ease_blend: float | None = None  # weight of EASE scores; None = chosen on validation; 0 = off
    cold_tower: bool = True  # separate content tower for items never seen in training


class SearchSpace(Section):
    text_encoder: list[str] = ["minilm", "tfidf", "none"]
    image_encoder: list[str] = ["effnet-lite0", "color", "none"]
    fusion: list[str] = ["concat", "mean", "gated", "attention"]
    n_layers: list[int] = [0, 4]  # [low, high]
    knn_k: list[int] = [0, 10, 20]
    knn_weight: list[float] = [0.0, 1.0]
    dim: list[int] = [32, 64, 128]
    lr: list[float] = [1e-4, 1e-2]  # log scale
    weight_decay: list[float] = [1e-8, 1e-4]  # log scale
    id_dropout: list[float] = [0.0, 0.6]
    modality_dropout: list[float] = [0.0, 0.4]
    loss: list[str] = ["softmax", "bpr"]
    temperature: list[float] = [0.05, 0.5]
    contrastive_weight: list[float] = [0.0, 0.5]
    ease_blend: list[float] = [0.0, 1.0]
    ease_lambda: list[float] = [50.0, 1000.0]  # log scale
    epochs: list[int] = [10, 60]


class SearchConfig(Section):
    n_trials: int = 20
    timeout: float | None = None  # seconds; None = no time budget
    sampler: Literal["tpe", "random", "cmaes"] = "tpe"
    pruner: Literal["median", "hyperband", "none"] = "median"
    seed: int = 2026
    storage: str = ""  # SQLAlchemy URL; empty = sqlite:///<out>/study.db
    study_name: str = "fusionrec"
    workers: int = 1
    multi_objective: bool = False  # maximise NDCG@20 and minimise scoring latency
    latency_budget_ms: float = 5.0  # chosen trial: best quality within this latency
    space: SearchSpace = SearchSpace()


class EvaluateConfig(Section):
    ks: list[int] = [10, 20]
    baselines: list[str] = ["mostpop", "itemknn", "ease", "bpr-mf", "lightgcn", "vbpr", "content-knn"]
    activity_buckets: list[int] = [20, 50, 150]  # train-interaction edges of user buckets
    promote_metric: str = "ndcg@20"
    promote_tolerance: float = 0.005  # challenger may be this much worse (absolute) and still promote


class PackageConfig(Section):
    model_name: str = "fusionrec"  # BentoML model store tag name
    bentofile: str = "serving/bentofile.yaml"


class ServeConfig(Section):
    port: int = 3000
    max_k: int = 100
    max_text_chars: int = 5000
    max_image_bytes: int = 5_000_000
    max_image_pixels: int = 25_000_000
    max_recent_items: int = 200
    feedback_url: str = ""  # SQLAlchemy URL; empty = sqlite:///<model store>/feedback.db
    token_env: str = "FUSIONREC_TOKEN"  # env var holding the bearer token of write endpoints


class MonitorConfig(Section):
    drift_share: float = 0.5  # share of drifted feedback columns that counts as feedback drift
    stattest: str = ""  # Evidently drift method for every feedback column; "" = Evidently picks per column
    stattest_threshold: float | None = None  # threshold of that method; None = Evidently's default
    embedding_drift_threshold: float = 0.55  # Evidently model-based embedding drift: ROC AUC above this drifts
    embedding_sample: int = 1000  # at most this many vectors per side enter an embedding drift check
    min_new_items: int = 20  # fewer new items in the current window: no new-item embedding check
    ctr_drop: float = 0.2  # relative click-through drop (current vs reference) that triggers retraining
    min_events: int = 200  # fewer current-window events: no decision
    reference_window: int = 2000  # first N feedback events after the current model's deployment
    current_window: int = 2000  # last N feedback events
    retrain_on: list[str] = ["feedback_drift", "ctr_drop", "interest_drift", "new_item_drift", "score_drift"]
    holdout_share: float = 0.2  # newest share of the merged feedback held out as the common holdout
    pipeline_package: str = "pipelines/compiled/training.yaml"  # kfp pipeline submitted by --trigger kfp
    service_url: str = ""  # running service asked to reload after a promotion ("" = none)
    token_env: str = "FUSIONREC_TOKEN"  # env var with the bearer token of the service's reload endpoint


class SimulateConfig(Section):
    users: int = 200  # simulated users drawn from the demo ground truth
    rounds: int = 20  # each round every user requests once and clicks by taste
    k: int = 10  # recommendations per request
    shift_at: int = 10  # round at which tastes shift (-1 = never)
    shift_strength: float = 1.0  # how far tastes move (0 = none, 1 = fully to the shifted taste)
    dislike_prob: float = 0.05  # chance an unwanted shown item gets an explicit "dislike"
    concurrency: int = 4  # parallel simulated users (HTTP connections)
    timeout_s: float = 10.0  # per HTTP request
    seed: int = 11


class PipelineConfig(Section):
    search_workers: int = 2  # dsl.ParallelFor fan-out
    trials_per_worker: int = 5
    image: str = "ghcr.io/fusionrec/fusionrec"  # tag = package version


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
