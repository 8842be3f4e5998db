"""Synthetic feedback-store rows for the monitor tests: a served log and the feedback it got.

Items are random unit vectors; the model ranks 10 of 40 random candidates by the users' old
taste; a user clicks an item with a probability that grows with the item's match to the
user's taste (old or, after the shift, a new one) and falls with the position. Shown items
the user strongly dislikes sometimes get an explicit "dislike".
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from fusionrec.monitoring.monitor import ModelView

N_ITEMS, N_NEW, DIM, N_USERS = 300, 40, 16, 120


def model_view(seed: int = 0) -> ModelView:
    """A fake model: N_ITEMS trained items (popularity > 0) and N_NEW new ones (popularity 0)."""
    rng = np.random.default_rng(seed)
    vecs = rng.normal(size=(N_ITEMS + N_NEW, DIM)).astype(np.float32)
    vecs[N_ITEMS:, :4] += 2.0  # new items sit in their own corner of the space
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    pop = np.concatenate([rng.integers(1, 200, N_ITEMS), np.zeros(N_NEW)]).astype(np.float64)
    return ModelView("v1", [f"i{j}" for j in range(N_ITEMS + N_NEW)], pop, vecs)


def store_frames(
    n_before: int, n_after: int, shift: bool, seed: int = 1, serve_new: bool = False
) -> tuple[pd.DataFrame, pd.DataFrame, ModelView]:
    """(feedback, served, model view): n_before requests with the old taste, n_after with the
    new one when `shift` (else the old one too). `serve_new` mixes new items in after n_before."""
    rng = np.random.default_rng(seed)
    view = model_view()
    taste = rng.normal(size=DIM)
    taste /= np.linalg.norm(taste)
    shifted = -taste  # the opposite taste: what the model ranks first is now disliked
    served_rows, feedback_rows = [], []
    ts = 1_000_000.0
    for r in range(n_before + n_after):
        user = f"u{rng.integers(N_USERS)}"
        cand = rng.choice(N_ITEMS, 40, replace=False)
        scores = view.vectors[cand] @ taste  # the model learned the old taste
        order = cand[np.argsort(-scores)][:10]
        if serve_new and r >= n_before:  # the catalogue grew: new items take the last 3 slots
            order[-3:] = N_ITEMS + rng.choice(N_NEW, 3, replace=False)
        now_taste = shifted if shift and r >= n_before else taste
        ts += 1.0
        for pos, item in enumerate(order):
            score = float(view.vectors[item] @ taste)
            served_rows.append((f"r{r}", user, f"i{item}", pos, score, "v1", ts))
            match = float(view.vectors[item] @ now_taste)
            p = 1 / (1 + np.exp(-(4 * match - 1.5))) / (1 + 0.15 * pos)
            if rng.random() < p:
                event = "like" if rng.random() < 0.2 else "click"
                feedback_rows.append((f"r{r}", user, f"i{item}", event, ts + 0.5, pos, score, "v1"))
            elif match < -0.3 and rng.random() < 0.3:
                feedback_rows.append((f"r{r}", user, f"i{item}", "dislike", ts + 0.5, pos, score, "v1"))
    served = pd.DataFrame(served_rows, columns=["request_id", "user_id", "item_id", "position", "score",
                                                "model_version", "ts"])
    feedback = pd.DataFrame(feedback_rows, columns=["request_id", "user_id", "item_id", "event", "ts",
                                                    "position", "score", "model_version"])
    feedback.insert(0, "id", np.arange(1, len(feedback) + 1))
    return feedback, served, view


def fake_kfp_client(submitted: list[dict]) -> type:
    """A stand-in for `kfp.Client` that records every run it is asked to create in `submitted`."""

    class FakeClient:
        def __init__(self, host: str, **options: object) -> None:
            self.host = host

        def create_run_from_pipeline_package(self, package: str, arguments: dict, experiment_name: str,
                                             namespace: str | None = None) -> object:
            submitted.append({"host": self.host, "package": package, "arguments": arguments,
                              "experiment": experiment_name})
            return type("Run", (), {"run_id": "run-123"})()

    return FakeClient
