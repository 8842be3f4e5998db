"""The simulator against a fake service (httpx.MockTransport): clicks follow the ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
from harness.simulate import Simulator, simulate, summarize

from fusionrec.config import SimulateConfig


class FakeService:
    """Serves each user the items they like most under the original tastes; records feedback."""

    def __init__(self, taste, fail_every: int = 0) -> None:  # noqa: ANN001
        self.taste, self.fail_every, self.calls = taste, fail_every, 0
        self.feedback: list[dict] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        body = json.loads(request.content)
        if self.fail_every and self.calls % self.fail_every == 0:
            return httpx.Response(500, json={"error": "boom"})
        if request.url.path == "/recommend":
            p = self.taste.click_prob(body["user_id"], self.taste.item_ids)
            top = self.taste.item_ids[np.argsort(-p)[: body["k"]]]
            items = [{"item_id": str(i), "position": n, "score": 1.0} for n, i in enumerate(top)]
            return httpx.Response(200, json={"request_id": f"r{self.calls}", "model_version": "v1", "items": items})
        assert request.headers["authorization"] == "Bearer t0k"
        self.feedback.append(body)
        return httpx.Response(200, json={"id": len(self.feedback), "stored": True})


def test_ctr_falls_after_the_shift(demo_dir: Path, taste_model, tmp_path: Path) -> None:  # noqa: ANN001
    service = FakeService(taste_model)
    cfg = SimulateConfig(users=60, rounds=4, shift_at=2, shift_strength=1.0, concurrency=2)
    sim = Simulator("http://fake", demo_dir, cfg, "t0k", transport=httpx.MockTransport(service))
    rounds = [sim.run_round(shifted=r >= cfg.shift_at) for r in range(cfg.rounds)]
    sim.close()
    summary = summarize(rounds, cfg)
    assert summary["errors"] == 0 and summary["requests"] == 240
    assert summary["ctr_after_shift"] < 0.8 * summary["ctr_before_shift"]
    assert rounds[3].expected_ctr < rounds[0].expected_ctr
    clicks = [f for f in service.feedback if f["event"] == "click"]
    assert len(clicks) == sum(r.clicks for r in rounds)
    assert all(f["request_id"].startswith("r") for f in clicks)
    organic = [f for f in service.feedback if f["event"] == "view"]
    assert len(organic) == sum(r.organic for r in rounds) == 240 and "request_id" not in organic[0]


def test_failed_requests_are_counted(demo_dir: Path, tmp_path: Path, monkeypatch) -> None:  # noqa: ANN001
    service = FakeService(__import__("fusionrec.data.demo", fromlist=["TasteModel"]).TasteModel.load(demo_dir),
                          fail_every=7)
    cfg = SimulateConfig(users=20, rounds=2, shift_at=-1, concurrency=1)
    real = Simulator.__init__

    def with_fake(self, url, demo, c, token, transport=None):  # noqa: ANN001, ANN202
        real(self, url, demo, c, token, transport=httpx.MockTransport(service))

    monkeypatch.setattr(Simulator, "__init__", with_fake)
    rounds = simulate("http://fake", demo_dir, cfg, "t0k", out_dir=tmp_path)
    assert sum(r.errors for r in rounds) > 0
    saved = json.loads((tmp_path / "simulation.json").read_text())
    assert saved["errors"] == sum(r.errors for r in rounds) and saved["ctr_after_shift"] is None
