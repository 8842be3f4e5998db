"""A feedback simulator: demo users drive a running service over HTTP and click by their true tastes.

Each round every simulated user asks `/recommend`, clicks each shown item with the demo's
ground-truth probability (`TasteModel.click_prob`), and posts the clicks to `/feedback` with the
response's request_id (so the store joins them to positions and scores); a shown item the user
would rather not see gets an explicit "dislike" now and then. Users also find `organic` items per
round on their own (drawn from the whole catalogue by their tastes, as the demo generator does;
event "view", no request_id): the traffic a real service sees besides its own recommendations,
and the only feedback not selected by the serving model. From round `shift_at` a share
`shift_strength` of the users has shifted tastes. Click-through per round is the measure.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from fusionrec.config import SimulateConfig
from fusionrec.io import write_json

logger = logging.getLogger(__name__)


@dataclass
class RoundStats:
    """Click-through and errors of one simulated round."""

    round: int
    shifted: bool
    requests: int = 0
    impressions: int = 0
    clicks: int = 0
    dislikes: int = 0
    organic: int = 0
    errors: int = 0
    explored_impressions: int = 0  # of the impressions, those the service marked explored
    explored_clicks: int = 0
    expected_ctr: float = 0.0  # mean true click probability of what was shown (less noisy than ctr)
    t_start: float = 0.0
    t_end: float = 0.0
    model_versions: list[str] = field(default_factory=list)
    phase: str = ""  # set by the caller (e.g. "before", "shifted", "retrained")

    @property
    def ctr(self) -> float:
        return self.clicks / self.impressions if self.impressions else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ctr": round(self.ctr, 5)}


@dataclass
class _UserResult:
    impressions: int = 0
    clicks: int = 0
    dislikes: int = 0
    organic: int = 0
    errors: int = 0
    explored_impressions: int = 0
    explored_clicks: int = 0
    prob_sum: float = 0.0
    version: str = ""


class Simulator:
    """Simulated demo users against one service URL.

    Args:
        url: the service base URL (e.g. http://127.0.0.1:3000).
        demo_dir: the demo dataset (its truth/ holds the tastes).
        cfg: users, k, shift, dislike probability, concurrency, timeouts, seed.
        token: bearer token for /feedback.
        transport: an httpx transport (tests pass `httpx.MockTransport`); None = the network.
    """

    def __init__(self, url: str, demo_dir: Path, cfg: SimulateConfig, token: str | None,
                 transport: Any = None) -> None:
        import httpx

        from fusionrec.data.demo import TasteModel

        self.url, self.cfg = url.rstrip("/"), cfg
        self.taste = TasteModel.load(demo_dir)
        self.known_items = set(self.taste.item_ids.tolist())
        rng = np.random.default_rng(cfg.seed)
        n = min(cfg.users, len(self.taste.user_ids))
        self.users = [str(u) for u in rng.choice(self.taste.user_ids, n, replace=False)]
        n_shift = int(round(cfg.shift_strength * n))
        self.shifting = set(rng.choice(self.users, n_shift, replace=False).tolist()) if n_shift else set()
        self.rng = np.random.default_rng(cfg.seed + 1)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        limits = httpx.Limits(max_connections=cfg.concurrency * 2)
        self.client = httpx.Client(timeout=cfg.timeout_s, headers=headers, limits=limits, transport=transport)
        self.round = 0

    def close(self) -> None:
        self.client.close()

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
        try:
            resp = self.client.post(f"{self.url}/{path}", json=body)
        except Exception as exc:  # a refused / reset / timed-out request is a failed request
            logger.warning("%s failed: %s", path, exc)
            return None
        if resp.status_code != 200:
            logger.warning("%s -> %d %s", path, resp.status_code, resp.text[:200])
            return None
        return dict(resp.json())

    def _organic(self, user: str, shifted: bool, rng: np.random.Generator, out: _UserResult) -> None:
        """The user's own finds: items drawn by softmax(taste score / temperature) over the catalogue."""
        pos = self.taste.user_positions(user)
        scores = self.taste.score_matrix(pos, shifted=shifted and user in self.shifting)[0]  # (n_items,)
        logits = scores / self.taste.temperature
        p = np.exp(logits - logits.max())
        for item in rng.choice(self.taste.item_ids, self.cfg.organic, replace=False, p=p / p.sum()):
            if self._post("feedback", {"user_id": user, "item_id": str(item), "event": "view"}) is None:
                out.errors += 1
            else:
                out.organic += 1

    def _user(self, user: str, shifted: bool, seed: int) -> _UserResult:
        out = _UserResult()
        rng = np.random.default_rng(seed)
        if self.cfg.organic > 0:
            self._organic(user, shifted, rng, out)
        rec = self._post("recommend", {"user_id": user, "k": self.cfg.k, "explain": False})
        if rec is None:
            out.errors += 1
            return out
        items = [it["item_id"] for it in rec.get("items", [])]
        explored = {it["item_id"] for it in rec.get("items", []) if it.get("explored")}
        out.version = str(rec.get("model_version", ""))
        known = [i for i in items if i in self.known_items]  # items added at runtime have no truth
        if not known:
            return out
        probs = self.taste.click_prob(user, np.asarray(known, dtype=object), shifted=shifted and user in self.shifting)
        out.impressions, out.prob_sum = len(known), float(probs.sum())
        out.explored_impressions = sum(i in explored for i in known)
        for item, p in zip(known, probs, strict=True):
            event = None
            if rng.random() < p:
                event = "click"
            elif rng.random() < self.cfg.dislike_prob * (1.0 - p):
                event = "dislike"
            if event is None:
                continue
            ok = self._post("feedback", {"user_id": user, "item_id": item, "event": event,
                                         "request_id": rec.get("request_id")})
            if ok is None:
                out.errors += 1
            elif event == "click":
                out.clicks += 1
                out.explored_clicks += item in explored
            else:
                out.dislikes += 1
        return out

    def run_round(self, shifted: bool) -> RoundStats:
        """Every simulated user requests once and reacts; returns the round's numbers."""
        stats = RoundStats(round=self.round, shifted=shifted, t_start=time.time())
        seeds = self.rng.integers(0, 2**31, len(self.users))
        with ThreadPoolExecutor(max_workers=max(1, self.cfg.concurrency)) as pool:
            results = list(pool.map(lambda a: self._user(a[0], shifted, int(a[1])), zip(self.users, seeds, strict=True)))
        for res in results:
            stats.requests += 1
            stats.impressions += res.impressions
            stats.clicks += res.clicks
            stats.dislikes += res.dislikes
            stats.organic += res.organic
            stats.errors += res.errors
            stats.explored_impressions += res.explored_impressions
            stats.explored_clicks += res.explored_clicks
            stats.expected_ctr += res.prob_sum
        stats.expected_ctr = stats.expected_ctr / stats.impressions if stats.impressions else 0.0
        stats.model_versions = sorted({r.version for r in results if r.version})
        stats.t_end = time.time()
        self.round += 1
        return stats


def simulate(url: str, demo_dir: Path, cfg: SimulateConfig, token: str | None, out_dir: Path | None = None,
             on_round: Callable[[RoundStats], None] | None = None) -> list[RoundStats]:
    """Run `cfg.rounds` rounds, shifting tastes from `cfg.shift_at`; write simulation.json when out_dir.

    Returns:
        One RoundStats per round.
    """
    sim = Simulator(url, demo_dir, cfg, token)
    rounds: list[RoundStats] = []
    try:
        for r in range(cfg.rounds):
            stats = sim.run_round(shifted=0 <= cfg.shift_at <= r)
            stats.phase = "shifted" if stats.shifted else "before"
            rounds.append(stats)
            logger.info("round %d ctr=%.4f errors=%d", r, stats.ctr, stats.errors)
            if on_round is not None:
                on_round(stats)
    finally:
        sim.close()
    if out_dir is not None:
        write_json(Path(out_dir) / "simulation.json", summarize(rounds, cfg))
    return rounds


def summarize(rounds: list[RoundStats], cfg: SimulateConfig) -> dict[str, Any]:
    """CTR before and after the shift, errors, and every round."""
    before = [r for r in rounds if not r.shifted]
    after = [r for r in rounds if r.shifted]

    def ctr(rs: list[RoundStats]) -> float | None:
        imps = sum(r.impressions for r in rs)
        return round(sum(r.clicks for r in rs) / imps, 5) if imps else None

    return {"config": cfg.model_dump(), "ctr_before_shift": ctr(before), "ctr_after_shift": ctr(after),
            "errors": sum(r.errors for r in rounds), "requests": sum(r.requests for r in rounds),
            "rounds": [r.to_dict() for r in rounds]}
