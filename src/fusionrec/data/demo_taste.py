"""The demo's ground-truth taste model: what a simulated user thinks of an item.

A user's score for an item is the sum of their preference for each of the item's
attributes (colour, shape, pattern, category, style, material), plus a popularity
bias, plus a context effect (at night, hours 18-5, some styles gain appeal). The demo
generator samples interactions from these scores, and the feedback simulator asks
`click_prob`; `shifted=True` rotates one factor's preferences (by default the colour
a user loves becomes another colour), the taste shift the monitoring loop must catch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from fusionrec.data.demo_render import FACTORS
from fusionrec.io import read_json, write_json

TRUTH_DIR = "truth"  # inside a demo folder: truth.json, users.parquet, items.parquet
NIGHT_HOURS = (18, 19, 20, 21, 22, 23, 0, 1, 2, 3, 4, 5)


def is_night(hour: Any) -> np.ndarray:
    """True where hour (0-23, scalar or array) is in the evening/night part of the day."""
    return np.isin(np.asarray(hour), NIGHT_HOURS)


@dataclass(eq=False)
class TasteModel:
    """Ground-truth tastes of the demo users (see the module docstring)."""

    user_ids: np.ndarray  # (U,) str
    prefs: dict[str, np.ndarray]  # factor -> (U, n_values) preference per attribute value
    attributes: pd.DataFrame  # one row per item: item_id, one column per factor (value name), popularity ...
    pop_weight: float  # weight of the items' log-popularity
    night_boost: np.ndarray  # (n_values of context_factor,) added at night
    click_bias: float  # click_prob = sigmoid(score - click_bias)
    temperature: float  # the generator samples items with softmax(score / temperature)
    context_factor: str = "style"
    shift_factor: str = "colour"
    shift: int = 3  # positions the shifted factor's preferences rotate by

    def __post_init__(self) -> None:
        self.item_ids = self.attributes["item_id"].to_numpy().astype(str)
        self.codes = {f: pd.Categorical(self.attributes[f], categories=v).codes.astype(np.int64)
                      for f, v in FACTORS.items()}
        self.popularity = self.attributes["popularity"].to_numpy(dtype=np.float64)
        self._user_pos = {u: k for k, u in enumerate(self.user_ids)}
        self._item_pos = {i: k for k, i in enumerate(self.item_ids)}

    # --- ids ---------------------------------------------------------------------
    def user_positions(self, user_ids: Any) -> np.ndarray:
        """Row of each user id in `prefs` (KeyError naming an unknown id)."""
        try:
            return np.array([self._user_pos[str(u)] for u in np.atleast_1d(user_ids)], dtype=np.int64)
        except KeyError as exc:
            raise KeyError(f"user {exc.args[0]!r} is not a demo user") from None

    def item_positions(self, item_ids: Any) -> np.ndarray:
        """Row of each item id in `attributes` (KeyError naming an unknown id)."""
        try:
            return np.array([self._item_pos[str(i)] for i in np.atleast_1d(item_ids)], dtype=np.int64)
        except KeyError as exc:
            raise KeyError(f"item {exc.args[0]!r} is not a demo item") from None

    # --- scores ------------------------------------------------------------------
    def factor_prefs(self, factor: str, shifted: bool = False) -> np.ndarray:
        """(U, n_values) preferences for one factor, rotated when shifted."""
        prefs = self.prefs[factor]
        return np.roll(prefs, self.shift, axis=1) if shifted and factor == self.shift_factor else prefs

    def score_matrix(self, users: np.ndarray, shifted: bool = False, night: bool = False) -> np.ndarray:
        """(len(users), n_items) scores of user positions for every item."""
        out = np.zeros((len(users), len(self.item_ids)))
        for f in FACTORS:
            out += self.factor_prefs(f, shifted)[users][:, self.codes[f]]  # (b, K) -> (b, I)
        out += self.pop_weight * self.popularity[None, :]
        if night:
            out += self.night_boost[self.codes[self.context_factor]][None, :]
        return out

    def score_pairs(self, users: np.ndarray, items: np.ndarray, shifted: bool = False,
                    night: np.ndarray | bool = False) -> np.ndarray:
        """Scores of (user position, item position) pairs, elementwise."""
        out = np.zeros(len(users))
        for f in FACTORS:
            out += self.factor_prefs(f, shifted)[users, self.codes[f][items]]
        out += self.pop_weight * self.popularity[items]
        return out + np.asarray(night) * self.night_boost[self.codes[self.context_factor][items]]

    def click_prob(self, user_ids: Any, item_ids: Any, shifted: bool = False, hour: Any = None) -> np.ndarray:
        """Probability that each user clicks each item (ids broadcast against each other).

        Args:
            user_ids: one id or an array of ids (original string ids, e.g. "u00012").
            item_ids: one id or an array; broadcast with user_ids (one user, many items works).
            shifted: use the shifted tastes (after the simulator's taste shift).
            hour: hour of day (0-23, scalar or array); None = no context effect (daytime).
        """
        users, items = np.broadcast_arrays(np.asarray(user_ids, dtype=object), np.asarray(item_ids, dtype=object))
        night = is_night(hour) if hour is not None else False
        night = np.broadcast_to(night, users.shape).ravel() if hour is not None else False
        score = self.score_pairs(self.user_positions(users.ravel()), self.item_positions(items.ravel()),
                                 shifted, night)
        return (1.0 / (1.0 + np.exp(-(score - self.click_bias)))).reshape(users.shape)

    def favourite(self, user_id: str, factor: str, shifted: bool = False) -> str:
        """The attribute value a user likes most for a factor (e.g. their favourite colour)."""
        row = self.factor_prefs(factor, shifted)[self.user_positions(user_id)[0]]
        return FACTORS[factor][int(np.argmax(row))]

    def items_with(self, **attrs: str) -> np.ndarray:
        """Item ids having all the given attribute values, e.g. items_with(colour="red")."""
        keep = np.ones(len(self.item_ids), dtype=bool)
        for factor, value in attrs.items():
            keep &= self.attributes[factor].to_numpy() == value
        return np.asarray(self.item_ids[keep])

    # --- files -------------------------------------------------------------------
    def save(self, truth_dir: Path) -> None:
        """Write truth.json, users.parquet (one column per factor=value) and items.parquet."""
        truth_dir.mkdir(parents=True, exist_ok=True)
        users = pd.DataFrame({"user_id": self.user_ids})
        for f, values in FACTORS.items():
            for k, v in enumerate(values):
                users[f"{f}={v}"] = self.prefs[f][:, k]
        users.to_parquet(truth_dir / "users.parquet", index=False)
        self.attributes.to_parquet(truth_dir / "items.parquet", index=False)
        write_json(truth_dir / "truth.json", {
            "factors": {f: list(v) for f, v in FACTORS.items()},
            "pop_weight": self.pop_weight, "night_hours": list(NIGHT_HOURS),
            "night_boost": [float(x) for x in self.night_boost], "click_bias": self.click_bias,
            "temperature": self.temperature, "context_factor": self.context_factor,
            "shift_factor": self.shift_factor, "shift": self.shift,
        })

    @classmethod
    def load(cls, demo_dir: Path | str) -> TasteModel:
        """Read the ground truth of a demo folder (the folder itself or its truth/ subfolder)."""
        path = Path(demo_dir)
        path = path / TRUTH_DIR if (path / TRUTH_DIR).is_dir() else path
        if not (path / "truth.json").is_file():
            raise FileNotFoundError(f"{path}: no truth.json; is this a folder made by `fusionrec demo-data`?")
        meta = read_json(path / "truth.json")
        users = pd.read_parquet(path / "users.parquet")
        prefs = {f: users[[f"{f}={v}" for v in values]].to_numpy(dtype=np.float64)
                 for f, values in meta["factors"].items()}
        return cls(
            user_ids=users["user_id"].to_numpy().astype(str), prefs=prefs,
            attributes=pd.read_parquet(path / "items.parquet"), pop_weight=float(meta["pop_weight"]),
            night_boost=np.asarray(meta["night_boost"], dtype=np.float64), click_bias=float(meta["click_bias"]),
            temperature=float(meta["temperature"]), context_factor=meta["context_factor"],
            shift_factor=meta["shift_factor"], shift=int(meta["shift"]),
        )
