"""The search space: a trial's suggestions turned into a TrainConfig, and the default as a point of it.

`suggest_config` is the only code that asks an optuna Trial for values; training never sees
the trial. Every parameter is suggested in every trial (no conditional branches), so the
multivariate TPE models them jointly; a value that a config does not use (the kNN weight when
k = 0, the fixed EASE weight when the blend is chosen on validation, the sparse EASE's head size
and row width on a catalogue small enough for the exact EASE) is simply ignored.

The space a search uses is fitted to the features folder it trains on (`fit_space`): the text
and image encoder choices are those of `search.space` that the folder holds (plus "none"), every
`vectors:` feature of the folder is one more in-or-out choice (param "vectors:<name>", True or
False; the chosen ones become `TrainConfig.extra_modalities`), and the default trial is the train
section fitted the same way. So no trial can ask for a feature that is not there; one that does
is a bug of the space (`SpaceError`), never a failed trial.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fusionrec.config import SPACE_CHOICES, SPACE_LOG, SearchSpace, TrainConfig

if TYPE_CHECKING:
    import optuna

EASE_MODE = "ease_blend_mode"  # categorical: "validation" (TrainConfig.ease_blend None) or "fixed"
INT_RANGES = ("n_layers", "epochs")  # [low, high] ranges of integers; the other ranges are floats
VECTORS = "vectors:"  # feature keys of precomputed vectors; each is an in/out param of that name


class SpaceError(Exception):
    """A trial of the fitted space asked for something the data does not hold: a bug, so the search stops.

    Not a ValueError or RuntimeError on purpose: the study fails a trial raising those and goes on.
    """


@dataclass(frozen=True)
class FittedSpace:
    """The space a search uses on one features folder (see `fit_space`)."""

    space: SearchSpace
    base: TrainConfig  # the default trial: the train section, fitted to the folder
    vectors: tuple[str, ...] = ()  # vectors: feature keys, each searched in or out
    notes: tuple[str, ...] = ()  # what fitting changed, for the log and summary.json

    def config(self, trial: optuna.Trial | optuna.trial.FixedTrial) -> TrainConfig:
        """The TrainConfig of one trial."""
        return suggest_config(trial, self.space, self.base, self.vectors)

    def default_params(self) -> dict[str, Any]:
        """The params of the default trial (for `study.enqueue_trial`)."""
        return default_params(self.space, self.base, self.vectors)


def vector_key(modality: str) -> str:
    """ "audio" or "vectors:audio" -> "vectors:audio" (TrainConfig.extra_modalities accepts both)."""
    return modality if ":" in modality else f"{VECTORS}{modality}"


def suggest_config(trial: optuna.Trial | optuna.trial.FixedTrial, space: SearchSpace, base: TrainConfig,
                   vectors: Sequence[str] = ()) -> TrainConfig:
    """Ask the trial for one point of the space and return the TrainConfig it stands for.

    Args:
        trial: the optuna trial (or a FixedTrial to replay stored params).
        space: the search space (choices and [low, high] ranges).
        base: fields outside the space (seed, batch size, patience, ...) come from here.
        vectors: vectors: feature keys, each asked in or out; the chosen ones replace the base's
            vectors: entries of extra_modalities (its other entries stay). Empty: the base's stay.

    Returns:
        base with every searched field replaced.
    """
    values: dict[str, Any] = {}
    for name in SPACE_CHOICES:
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
    if vectors:
        kept = [m for m in base.extra_modalities if not vector_key(m).startswith(VECTORS)]
        values["extra_modalities"] = kept + [v for v in vectors if trial.suggest_categorical(v, [True, False])]
    data = base.model_dump()
    data.update(values)  # not with_overrides: it would drop ease_blend=None
    return TrainConfig(**data)


def _with(choices: Iterable[Any], value: Any) -> list[Any]:
    out = list(choices)
    return out if value in out else [*out, value]


def _widen(bounds: list[Any], value: float) -> list[Any]:
    return [min(bounds[0], value), max(bounds[1], value)]


def _fit_encoders(data: dict[str, Any], base: dict[str, Any], available: dict[str, list[str]],
                  notes: list[str]) -> None:
    """Encoder choices and the base's encoders restricted to what the folder holds (in place)."""
    for modality in ("text", "image"):
        field = f"{modality}_encoder"
        have = list(available.get(modality, []))
        kept = [e for e in data[field] if e == "none" or e in have]
        dropped = [e for e in data[field] if e not in kept]
        if dropped:
            notes.append(f"{field}: {dropped} not in the features folder, not searched")
        unlisted = [e for e in have if e not in data[field]]
        if unlisted:
            notes.append(f"{field}: {unlisted} in the features folder but not in search.space.{field}, not searched")
        data[field] = kept or ["none"]
        if base[field] != "none" and base[field] not in have:
            usable = [e for e in data[field] if e != "none"]
            fallback = usable[0] if usable else "none"
            notes.append(f"default trial: train.{field} {base[field]!r} is not in the features folder; "
                         f"it uses {fallback!r}")
            base[field] = fallback


def _fit_vectors(base: dict[str, Any], available: dict[str, list[str]], notes: list[str]) -> tuple[str, ...]:
    """Every vectors: feature of the folder (sorted); the base's extra modalities kept where they exist."""
    vectors = tuple(sorted(vector_key(n) for n in available.get("vectors", [])))
    present = {f"{m}:{n}" for m, names in available.items() for n in names}
    extras = [vector_key(m) for m in base["extra_modalities"]]
    missing = [m for m in extras if m not in present]
    if missing:
        notes.append(f"default trial: train.extra_modalities {missing} not in the features folder, left out")
    others = [m for m in extras if m in present and not m.startswith(VECTORS)]
    base["extra_modalities"] = others + [v for v in vectors if v in extras]  # the order suggest_config gives
    if vectors:
        notes.append(f"vectors: each of {list(vectors)} searched in or out")
    return vectors


def fit_space(space: SearchSpace, base: TrainConfig, available: dict[str, list[str]] | None = None) -> FittedSpace:
    """The space a search actually uses: what the features folder holds, and the base config in it.

    Args:
        space: search.space of params.yaml.
        base: the train section; its searched fields are the default trial.
        available: {"text": [...], "image": [...], "vectors": [...]}, the encoders and vectors
            names the features folder holds (`available_encoders`); None = not checked.

    Encoder choices absent from `available` are dropped ("none" always stays); every vectors:
    feature becomes an in/out choice. The base is fitted the same way (an encoder the folder lacks
    becomes the first one of that modality it has, else "none"; absent extra modalities are left
    out), then its values are added to the choices and the ranges widened to contain them, so the
    enqueued default trial is exactly the fitted base and no trial asks for a missing feature.

    Returns:
        the FittedSpace, with human-readable notes on what changed.
    """
    data = space.model_dump()
    fitted = base.model_dump()
    notes: list[str] = []
    vectors: tuple[str, ...] = ()
    if available is not None:
        _fit_encoders(data, fitted, available, notes)
        vectors = _fit_vectors(fitted, available, notes)
    base = TrainConfig(**fitted)
    for name in SPACE_CHOICES:
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
    return FittedSpace(SearchSpace(**data), base, vectors, tuple(notes))


def default_params(space: SearchSpace, base: TrainConfig, vectors: Sequence[str] = ()) -> dict[str, Any]:
    """The trial params that make `suggest_config` return `base` (for `study.enqueue_trial`).

    `space` and `base` should come from `fit_space`, so every value lies inside the space.
    """
    params: dict[str, Any] = {}
    for name in (*SPACE_CHOICES, *INT_RANGES,
                 "knn_weight", "lr", "weight_decay", "id_dropout", "modality_dropout", "temperature",
                 "contrastive_weight", "ease_lambda"):
        params[name] = getattr(base, name)
        if name in SPACE_LOG and params[name] <= 0:
            params[name] = getattr(space, name)[0]
    params["ease_blend"] = space.ease_blend[0] if base.ease_blend is None else base.ease_blend
    params[EASE_MODE] = "validation" if base.ease_blend is None else "fixed"
    extras = {vector_key(m) for m in base.extra_modalities}
    params.update({v: v in extras for v in vectors})
    return params


def config_from_params(params: dict[str, Any], space: SearchSpace, base: TrainConfig) -> TrainConfig:
    """Replay stored trial params into a TrainConfig (e.g. the best trial of a study)."""
    import optuna

    vectors = [k for k in params if k.startswith(VECTORS)]
    return suggest_config(optuna.trial.FixedTrial(params), space, base, vectors)
