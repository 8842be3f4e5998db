"""Every pipeline step as one path-based function: `run_<verb>(inputs..., out_dir, cfg) -> StepResult`.

This module is the index of the steps. The CLI, the DVC stages (through the CLI) and the kfp
components call only these functions; the logic lives in the module each one names.

It also holds how the trained configuration is resolved, the same way everywhere (DVC, the kfp
pipeline, the closed loop): params.yaml's `train` section, with the search's overlay laid over it
when `search.enabled`. The overlay (`<search out>/best_overlay.yaml`) holds only the fields the
search's best trial changed, so what is trained is always visible as `train` + a short file.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import yaml

from fusionrec.config import ConfigError, SearchConfig, TrainConfig, load_config_file
from fusionrec.data.demo import run_demo_data
from fusionrec.data.ingest import run_ingest
from fusionrec.data.splits import run_split
from fusionrec.evaluation.evaluator import run_evaluate
from fusionrec.features.pipeline import run_featurize
from fusionrec.io import StepResult, read_json, write_json
from fusionrec.monitoring.monitor import run_monitor
from fusionrec.packaging import run_package
from fusionrec.training import run_train

STEPS = ("ingest", "split", "featurize", "search", "train", "evaluate", "package")  # the training pipeline, in order

OVERLAY_FILE = "best_overlay.yaml"  # in the search's out folder: the fields train lays over params.yaml's train
STUDY_DIR = "study"  # in the search's out folder: the Optuna study and its reports (best.yaml, trials.csv, plots/)
METRICS_FILE = "metrics.json"  # flat step metrics (DVC metrics)
HISTORY_FILE = "history.csv"  # per trial (search) or per epoch (train): DVC plot data
TRAIN_METRICS = ("valid_ndcg@20", "valid_recall@20", "best_epoch", "ease_blend")
SEARCH_METRICS = ("best_valid_ndcg@20", "default_valid_ndcg@20", "best_trial", "n_trials", "n_complete", "n_pruned",
                  "n_failed")


def search_overlay(best: TrainConfig, base: TrainConfig) -> dict[str, Any]:
    """The fields of `best` that differ from `base` (JSON values): what train lays over params.yaml's train."""
    ours, theirs = best.model_dump(mode="json"), base.model_dump(mode="json")
    return {k: v for k, v in ours.items() if theirs.get(k) != v}


def write_overlay(overlay: dict[str, Any], path: Path, note: str) -> Path:
    """Write the overlay as YAML under a comment saying where it came from (`{}` when empty)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = yaml.safe_dump(overlay, sort_keys=True) if overlay else "{}\n"
    path.write_text(f"# {note}\n# `fusionrec train --overlay` lays these fields over params.yaml's train section.\n{body}")
    return path


def read_overlay(path: Path | str) -> dict[str, Any]:
    """The overlay mapping of a best_overlay.yaml (a missing file is an error: it is a declared input)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: overlay file not found; run `fusionrec search` first (with search.enabled: false "
                          "it writes an empty overlay)")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of train fields, got {type(data).__name__}")
    return data


def resolve_train_config(base: TrainConfig, overlay: Path | str | None) -> TrainConfig:
    """params.yaml's train section with an overlay file laid over it (None: the section as it is).

    A field the overlay sets to null (e.g. ease_blend: auto) is set to null, not skipped.
    """
    if overlay is None:
        return base
    fields = read_overlay(overlay)
    unknown = sorted(set(fields) - set(TrainConfig.model_fields))
    if unknown:
        raise ConfigError(f"{overlay}: unknown train field(s) {', '.join(unknown)}")
    from pydantic import ValidationError

    try:
        return TrainConfig(**{**base.model_dump(), **fields})
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"{overlay}: {problems}") from None


def _finite(metrics: dict[str, Any], keys: tuple[str, ...] | None = None) -> dict[str, float | int]:
    """Numbers only, no NaN (DVC and kfp read these), in the order of `keys` when given."""
    names = keys if keys is not None else tuple(metrics)
    return {k: metrics[k] for k in names if isinstance(metrics.get(k), int | float) and math.isfinite(metrics[k])}


def _trial_history(trials_csv: Path, out: Path) -> Path:
    """history.csv: trial, valid_ndcg@20, best_valid_ndcg@20 (running best) of every completed trial."""
    rows: list[dict[str, Any]] = []
    best = -math.inf
    if trials_csv.is_file():
        with trials_csv.open() as fh:
            for row in csv.DictReader(fh):
                value = row.get("value", row.get("value_ndcg@20", ""))
                if row.get("state") != "COMPLETE" or not value:
                    continue
                best = max(best, float(value))
                rows.append({"trial": int(row["number"]), "valid_ndcg@20": float(value), "best_valid_ndcg@20": best})
    with out.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["trial", "valid_ndcg@20", "best_valid_ndcg@20"])
        writer.writeheader()
        writer.writerows(rows)
    return out


def run_search(ingested_dir: Path, features_dir: Path, split_dir: Path, out_dir: Path, cfg: SearchConfig,
               base: TrainConfig) -> StepResult:
    """The `search` step: the Optuna search when cfg.enabled, and in every case the overlay train reads.

    Writes to out_dir: best_overlay.yaml (the best trial's fields that differ from `base`; `{}` when
    the search is off or kept the default), metrics.json (flat: best and default valid NDCG@20, trial
    counts), history.csv (valid NDCG@20 per completed trial, for `dvc plots`) and study/ (the study
    and its reports, see `fusionrec.automl.run_search`; only summary.json when the search is off).
    """
    from fusionrec.automl import run_search as search_study

    out_dir = Path(out_dir)
    study = out_dir / STUDY_DIR
    outputs: dict[str, Path] = {}
    if cfg.enabled:
        result = search_study(Path(ingested_dir), Path(features_dir), Path(split_dir), study, cfg, base)
        outputs.update(result.outputs)
        metrics = _finite(result.metrics, SEARCH_METRICS)
        best = load_config_file(result.outputs["best"], TrainConfig) if "best" in result.outputs else base
        note = (f"the search's best trial {metrics['best_trial']} (valid ndcg@20 {metrics['best_valid_ndcg@20']:.4f})"
                if "best_trial" in metrics else "the search completed no trial: params.yaml's train as it is")
    else:
        study.mkdir(parents=True, exist_ok=True)
        write_json(study / "summary.json", {"enabled": False, "reason": "search.enabled is false"})
        metrics, best, note = {"n_trials": 0}, base, "search.enabled is false: params.yaml's train as it is"
    overlay = search_overlay(best, base)
    metrics = {"enabled": int(cfg.enabled), **metrics, "overlay_fields": len(overlay)}
    outputs["overlay"] = write_overlay(overlay, out_dir / OVERLAY_FILE, note)
    outputs["metrics"] = write_json(out_dir / METRICS_FILE, metrics)
    outputs["history"] = _trial_history(study / "trials.csv", out_dir / HISTORY_FILE)
    return StepResult(metrics=metrics, outputs=outputs)


def write_train_report(result: StepResult, model_dir: Path, report_dir: Path) -> dict[str, Path]:
    """DVC's view of a `run_train` result: report_dir/metrics.json (valid NDCG/recall@20, best epoch) and
    report_dir/history.csv (one row per epoch: losses, valid metrics), from the model folder."""
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    keys = TRAIN_METRICS
    paths = {"metrics": write_json(report_dir / METRICS_FILE, _finite(result.metrics, keys))}
    history_json = Path(model_dir) / "history.json"
    epochs: list[dict[str, Any]] = read_json(history_json) if history_json.is_file() else []
    columns = list(dict.fromkeys(k for row in epochs for k in row if k != "seconds")) or ["epoch"]
    with (report_dir / HISTORY_FILE).open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(epochs)
    paths["history"] = report_dir / HISTORY_FILE
    return paths


__all__ = [
    "OVERLAY_FILE", "STEPS", "STUDY_DIR", "StepResult", "read_overlay", "resolve_train_config", "run_demo_data",
    "run_evaluate", "run_featurize", "run_ingest", "run_monitor", "run_package", "run_search", "run_split",
    "run_train", "search_overlay", "write_overlay", "write_train_report",
]
