"""The `package` step: put a trained model folder into the BentoML model store.

The stored model is the model folder byte for byte (safetensors + JSON + parquet +
encoders/ state: no pickle) with its metadata (version, metrics, training data
fingerprint, encoders) on the BentoML model, so `bentoml models get fusionrec:latest`
answers "what is deployed" without loading anything. `serving/bentofile.yaml` then
builds a bento from `serving/service.py`, which references `<model_name>:latest`.

The store is an argument typed by the `ModelStore` protocol: the library never imports BentoML,
the adapters pass `serving.store.BentoStore()` in. Before anything is stored, the promotion gate
is read: a model that `fusionrec evaluate` rejected (promotion.json says promote=false) is
refused unless forced, so `fusionrec package`, the DVC stage and the kfp component gate alike.

With a `Rollout` (the training pipeline's promoted branch), the stored model is then published
under the models root and the champion pointer moves, through the same `rollout.promote` a
retraining run on one machine uses: what the cluster promotes reaches every serving replica.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from fusionrec import __version__ as fusionrec_version
from fusionrec.config import PackageConfig
from fusionrec.evaluation.gate import PROMOTION_FILE, Decision, load_decision
from fusionrec.io import StepResult, read_json, write_json
from fusionrec.schema import MODEL_CONFIG, MODEL_ITEMS, MODEL_USERS, MODEL_WEIGHTS

if TYPE_CHECKING:
    from fusionrec.monitoring.rollout import Rollout

logger = logging.getLogger(__name__)
PACKAGE_JSON = "package.json"  # written to the step's out dir: tag, store, metadata, promotion


class PackageError(ValueError):
    """A model folder that cannot be packaged; the message names the file."""


class PromotionRejected(PackageError):
    """The promotion gate said no; the message gives the gate's numbers."""


class ModelStore(Protocol):
    """Where packaged models go (`serving.store.BentoStore`: the BentoML model store)."""

    @property
    def location(self) -> str:
        """Where the store lives (recorded in package.json), e.g. the BentoML home folder."""
        ...

    def put(self, model_dir: Path, name: str, labels: dict[str, str], metadata: dict[str, Any]) -> str:
        """Copy model_dir byte for byte into the store as a new version of `name`; returns its tag."""
        ...


def _clean(value: Any) -> Any:
    """Metadata BentoML accepts: JSON scalars, lists and dicts; None and NaN dropped."""
    if isinstance(value, dict):
        cleaned = {str(k): _clean(v) for k, v in value.items()}
        return {k: v for k, v in cleaned.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value if v is not None]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, str | int | float | bool):
        return value
    return None if value is None else str(value)


def model_metadata(model_dir: Path) -> dict[str, Any]:
    """What the model store records about a model folder (from its config.json meta)."""
    for name in (MODEL_WEIGHTS, MODEL_CONFIG, MODEL_ITEMS, MODEL_USERS):
        if not (model_dir / name).is_file():
            raise PackageError(f"{model_dir}: not a model folder, missing {name} (run `fusionrec train` first)")
    cfg = read_json(model_dir / MODEL_CONFIG)
    meta = cfg.get("meta") or {}
    train = cfg.get("train_config") or {}
    return _clean({
        "version": str(meta.get("version") or model_dir.name),
        "trained_at": meta.get("trained_at"),
        "data_fingerprint": meta.get("data_fingerprint"),
        "encoders": meta.get("encoders") or {},
        "modalities": meta.get("modalities") or [],
        "test_metrics": meta.get("test_metrics") or {},
        "valid_metrics": meta.get("valid_metrics") or {},
        "ease_blend": meta.get("ease_blend"),
        "fusion": train.get("fusion"),
        "fusionrec_version": fusionrec_version,
    })


def check_promotion(promotion: Path, force: bool = False) -> Decision:
    """Read the gate's verdict (promotion.json from `fusionrec evaluate`) and refuse a rejected model.

    Args:
        promotion: promotion.json, or the evaluate output folder that holds it.
        force: package a rejected model anyway (the verdict is still returned and recorded).
    Returns:
        The gate's Decision.
    Raises:
        PromotionRejected: promote is false and not forced; the message names the challenger's
            and the champion's numbers and the tolerance.
        PackageError: the file is missing or was not written by the gate.
    """
    path = Path(promotion)
    path = path / PROMOTION_FILE if path.is_dir() else path
    try:
        decision = load_decision(path)
    except (FileNotFoundError, ValueError) as exc:
        raise PackageError(str(exc)) from None
    if decision.promote:
        return decision
    if force:
        logger.warning("packaging a model the promotion gate rejected (forced): %s", decision.summary())
        return decision
    raise PromotionRejected(f"{path}: the promotion gate rejected this model: {decision.summary()}. "
                            "Package it anyway with --force (kfp: force=True).")


def run_package(model_dir: Path, out_dir: Path, cfg: PackageConfig, store: ModelStore,
                promotion: Path | None = None, force: bool = False, rollout: Rollout | None = None,
                source: str = "") -> StepResult:
    """Put model_dir into `store` as `<cfg.model_name>:<auto>`, once the promotion gate allows it,
    then (with a rollout) make it the champion every serving replica loads.

    Args:
        store: the model store backend (`serving.store.BentoStore()` in the CLI and the kfp component).
        promotion: promotion.json of the model's evaluation (or its folder); None = no gate (a model
            promoted by a retraining run's own gate, or packaged by hand).
        force: package even when promotion.json rejected the model.
        rollout: publish the model under its models root and move the champion pointer of its
            database (`fusionrec.monitoring.rollout.rollout_from_env`); None = package only.
        source: what promoted the model, kept on the pointer (e.g. "kfp run <id>").
    Returns:
        StepResult with metrics {size_mb, n_files, rolled_out} and outputs {"package":
        out_dir/package.json}, which holds the tag, e.g. "fusionrec:k2xvq3..." (`fusionrec serve
        --model TAG`), and the new champion pointer (null without a rollout).
    Raises:
        PromotionRejected: the gate rejected the model and force is False; nothing was stored.
        PackageError: not a model folder, or it holds pickled files.
        RolloutError, StateError: the model was stored but not published or the pointer not moved.
    """
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    decision = check_promotion(promotion, force) if promotion is not None else None
    meta = model_metadata(model_dir)
    pickles = [str(p) for p in model_dir.rglob("*") if p.suffix in (".pkl", ".pickle", ".pt", ".pth", ".joblib")]
    if pickles:
        raise PackageError(f"{model_dir}: refusing to package pickled files {pickles[:5]}")
    labels = {"framework": "fusionrec", "model_version": str(meta["version"])[:60],
              "fusion": str(meta.get("fusion", ""))}
    tag = store.put(model_dir, cfg.model_name, labels, meta)
    files = [p for p in model_dir.rglob("*") if p.is_file()]
    size_mb = sum(p.stat().st_size for p in files) / 1e6
    gate = None if decision is None else {**decision.to_dict(), "forced": not decision.promote}
    champion = rollout.promote(model_dir, source).to_dict() if rollout is not None else None
    path = write_json(out_dir / PACKAGE_JSON, {"tag": tag, "model_name": cfg.model_name, "store": store.location,
                                               "metadata": meta, "promotion": gate, "champion": champion})
    return StepResult(metrics={"size_mb": round(size_mb, 3), "n_files": len(files), "rolled_out": int(bool(champion))},
                      outputs={"package": path})


__all__ = [
    "PACKAGE_JSON", "ModelStore", "PackageError", "PromotionRejected", "check_promotion", "model_metadata",
    "run_package",
]
