"""The search space: a trial's suggestions turned into a TrainConfig, and the default as a point of it.

`suggest_config` is the only code that asks an optuna Trial for values; training never sees
the trial. Every parameter is suggested in every trial (no conditional branches), so the
multivariate TPE models them jointly; a value that a config does not use (the kNN weight when
k = 0, the fixed EASE weight when the blend is chosen on validation) is simply ignored.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from fusionrec.config import SPACE_LOG, SearchSpace, TrainConfig

if TYPE_CHECKING:
    import optuna

EASE_MODE = "ease_blend_mode"  # categorical: "validation" (TrainConfig.ease_blend None) or "fixed"
INT_RANGES = ("n_layers", "epochs")  # [low, high] ranges of integers; the other ranges are floats


def suggest_config(trial: optuna.Trial | optuna.trial.FixedTrial, space: SearchSpace, base: TrainConfig) -> TrainConfig:
    """Ask the trial for one point of the space and return the TrainConfig it stands for.

    Args:
        trial: the optuna trial (or a FixedTrial to replay stored params).
        space: the search space (choices and [low, high] ranges).
        base: fields outside the space (seed, batch size, patience, ...) come from here.

    Returns:
        base with every searched field replaced.
    """
    values: dict[str, Any] = {}
    for name in ("text_encoder", "image_encoder", "fusion", "knn_k", "dim", "loss"):
        values[name] = trial.suggest_categorical(name, list(getattr(space, name)))
    for name in INT_RANGES:
        low, high = getattr(space, name)
        values[name] = trial.suggest_int(name, int(low), int(high))
    for name in ("knn_weight", "lr", "weight_decay", "id_dropout", "modality_dropout", "temperature",
                 "contrastive_weight", "ease_blend", "ease_lambda"):
        low, high = getattr(space, name)
        values[name] = trial.suggest_float(name, float(low), float(high), log=name in SPACE_LOG)
    modes = ["validation", "fixed"] if space.ease_blend_auto else ["fixed"]
    if trial.suggest_categorical(EASE_MODE, modes) == "validation":
        values["ease_blend"] = None
    data = base.model_dump()
    data.update(values)  # not with_overrides: it would drop ease_blend=None
    return TrainConfig(**data)


def _with(choices: Iterable[Any], value: Any) -> list[Any]:
    out = list(choices)
    return out if value in out else [*out, value]


def _widen(bounds: list[Any], value: float) -> list[Any]:
    return [min(bounds[0], value), max(bounds[1], value)]


def fit_space(space: SearchSpace, base: TrainConfig, available: dict[str, list[str]] | None = None
              ) -> tuple[SearchSpace, list[str]]:
    """The space a search actually uses: encoders the features folder holds, plus the base config.

    Encoder choices absent from `available` ({"text": [...], "image": [...]}) are dropped
    ("none" always stays); the base's own values are added to the choices and the ranges are
    widened to contain them, so the enqueued default trial is exactly `base`.

    Returns:
        (the fitted space, human-readable notes on what changed).
    """
    data = space.model_dump()
    notes: list[str] = []
    for modality in ("text", "image"):
        field = f"{modality}_encoder"
        if available is not None:
            have = set(available.get(modality, []))
            kept = [e for e in data[field] if e == "none" or e in have]
            dropped = [e for e in data[field] if e not in kept]
            if dropped:
                notes.append(f"{field}: {dropped} not in the features folder, not searched")
            data[field] = kept
    for name in ("text_encoder", "image_encoder", "fusion", "knn_k", "dim", "loss"):
        value = getattr(base, name)
        if value not in data[name]:
            notes.append(f"{name}: added the default {value!r} to the choices")
            data[name] = _with(data[name], value)
    for name in (*INT_RANGES, "knn_weight", "lr", "weight_decay", "id_dropout", "modality_dropout",
                 "temperature", "contrastive_weight", "ease_lambda"):
        value = getattr(base, name)
        low, high = data[name]
        if name in SPACE_LOG and value <= 0:
            notes.append(f"{name}: the default {value} is not on the log scale; the default trial uses {low}")
        elif not low <= value <= high:
            data[name] = _widen(data[name], value)
            notes.append(f"{name}: widened to {data[name]} to contain the default {value}")
    if base.ease_blend is None:
        data["ease_blend_auto"] = True
    elif not data["ease_blend"][0] <= base.ease_blend <= data["ease_blend"][1]:
        data["ease_blend"] = _widen(data["ease_blend"], base.ease_blend)
        notes.append(f"ease_blend: widened to {data['ease_blend']} to contain the default {base.ease_blend}")
    return SearchSpace(**data), notes


def default_params(space: SearchSpace, base: TrainConfig) -> dict[str, Any]:
    """The trial params that make `suggest_config` return `base` (for `study.enqueue_trial`).

    `space` should come from `fit_space(space, base)`, so every value lies inside it.
    """
    params: dict[str, Any] = {}
    for name in ("text_encoder", "image_encoder", "fusion", "knn_k", "dim", "loss", *INT_RANGES,
                 "knn_weight", "lr", "weight_decay", "id_dropout", "modality_dropout", "temperature",
                 "contrastive_weight", "ease_lambda"):
        params[name] = getattr(base, name)
        if name in SPACE_LOG and params[name] <= 0:
            params[name] = getattr(space, name)[0]
    params["ease_blend"] = space.ease_blend[0] if base.ease_blend is None else base.ease_blend
    params[EASE_MODE] = "validation" if base.ease_blend is None else "fixed"
    return params


def config_from_params(params: dict[str, Any], space: SearchSpace, base: TrainConfig) -> TrainConfig:
    """Replay stored trial params into a TrainConfig (e.g. the best trial of a study)."""
    import optuna

    return suggest_config(optuna.trial.FixedTrial(params), space, base)
