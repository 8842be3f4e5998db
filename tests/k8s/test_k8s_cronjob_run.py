"""The monitor CronJob works as written: its rendered command, run as the kubelet would start it.

The dev overlay is rendered with kustomize; the CronJob container's command, args and env are
resolved from the rendered objects (ConfigMaps, Secrets, the namespace), `$(VAR)` expanded as the
kubelet does, and every mount mapped to a folder of its own (tests/k8s/k8s_pod.py): the params
ConfigMap, a projected Kubeflow token, the models volume holding a trained model, the data volume
holding a dataset, the reports volume and /tmp. The command is the repository's `fusionrec`
console script, run in an empty working directory with nothing but that env. Test values stand in
for what only a cluster has: the feedback store is the suite's real PostgreSQL, KFP_HOST a fake
Kubeflow Pipelines API server on 127.0.0.1 that the real `kfp.Client` talks to (fake_kfp.py), and
DATA_URI the data volume's own folder (on a cluster: the bucket that volume is bound to).

- In the default suite, with too little feedback for a decision (quick: no drift checks): the run
  exits 0, leaves its report in a dated folder and the history page, and applies the retention.
- Marked slow (Evidently reports in every run, about a minute): traffic as the model learned it
  gives a run that decides no retrain and submits nothing; then the users' taste shifts, and after
  `monitor.persistence` runs that see it the monitor merges the feedback into the data volume's
  dataset and submits the compiled pipeline shipped in the wheel, with `data_uri` pointing there.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from fake_kfp import FakeKfp
from k8s_manifests import Doc, one
from k8s_pod import TOKEN, LocalPod

from fusionrec.config import MonitorConfig, load_params
from fusionrec.monitoring.merge import WATERMARK
from fusionrec.monitoring.monitor import ModelView, load_model_view
from fusionrec.monitoring.rollout import promote
from fusionrec.monitoring.state import ServingState
from fusionrec.monitoring.store import FeedbackStore, feedback_table, served_table

pytestmark = pytest.mark.integration

OVERLAY = "dev"
RUN_TIMEOUT_S = 300
USERS = 60


@dataclass
class Traffic:
    """Requests to the served model and the users' answers: they click what matches their taste,
    less further down the list; after a shift their taste is the opposite of what the model learned."""

    view: ModelView
    seed: int = 5
    served: list[dict[str, Any]] = field(default_factory=list)
    feedback: list[dict[str, Any]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)
        vecs = self.view.vectors.astype(np.float64)
        self.vectors = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-9)
        taste = self.rng.normal(size=self.vectors.shape[1])
        self.taste = taste / np.linalg.norm(taste)
        self.requests = 0

    def run(self, events: int, start: float, step: float, shifted: bool) -> None:
        """Requests from `start`, one every `step` seconds, until `events` feedback events came back."""
        goal, ts = len(self.feedback) + events, start
        now_taste = -self.taste if shifted else self.taste
        while len(self.feedback) < goal:
            self.requests += 1
            request, user = f"req-{self.requests}", f"cron-u{self.rng.integers(USERS)}"
            cand = self.rng.choice(len(self.vectors), 40, replace=False)
            shown = cand[np.argsort(-(self.vectors[cand] @ self.taste))][:10]  # the model's old-taste ranking
            for pos, item in enumerate(shown):
                score = float(self.vectors[item] @ self.taste)
                self.served.append({"request_id": request, "user_id": user, "item_id": self.view.item_ids[item],
                                    "position": pos, "score": score, "model_version": self.view.version, "ts": ts})
                match = float(self.vectors[item] @ now_taste)
                p = 1 / (1 + np.exp(-(4 * match - 1.5))) / (1 + 0.15 * pos)
                event = ("like" if self.rng.random() < 0.2 else "click") if self.rng.random() < p else \
                    "dislike" if match < -0.3 and self.rng.random() < 0.3 else None
                if event:
                    self.feedback.append({"request_id": request, "user_id": user, "item_id": self.view.item_ids[item],
                                          "event": event, "ts": ts + 2.0, "position": pos, "score": score,
                                          "model_version": self.view.version})
            ts += step

    def flush(self, url: str) -> None:
        """Write what was generated so far into the store, as the service would have."""
        with FeedbackStore(url) as store, store.engine.begin() as conn:
            if self.served:
                conn.execute(served_table.insert(), self.served)
            if self.feedback:
                conn.execute(feedback_table.insert(), self.feedback)
        self.served, self.feedback = [], []


@dataclass
class Cluster:
    """The CronJob's pod laid out under tmp_path, its store, its fake Kubeflow API and the model it monitors."""

    pod: LocalPod
    kfp_api: FakeKfp
    store_url: str
    params: MonitorConfig
    view: ModelView

    @property
    def reports(self) -> Path:
        return self.pod.local("/reports")

    @property
    def data(self) -> Path:
        return self.pod.local("/data")

    def run(self) -> subprocess.CompletedProcess[str]:
        result = self.pod.run(self.pod.root / "workdir", RUN_TIMEOUT_S)
        assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        return result


@pytest.fixture()
def cluster(rendered: dict[str, list[Doc]], postgres: Any, model_dir: Path, demo_dir: Path,
            tmp_path: Path) -> Iterator[Cluster]:
    docs = rendered[OVERLAY]
    assert one(docs, "ConfigMap", "fusionrec-env")["data"]["DATA_URI"].split("://")[0] in {"minio", "s3", "gs"}, (
        "DATA_URI must be a URI the kfp importer reads")
    store_url = postgres.new_database("cronjob")
    with FakeKfp() as kfp_api:
        pod = LocalPod(docs, one(docs, "CronJob", "fusionrec-monitor"), "monitor", tmp_path / "pod", {
            ("Secret", "fusionrec-db", "feedback-url"): store_url,
            ("ConfigMap", "fusionrec-env", "KFP_HOST"): kfp_api.url,
            ("ConfigMap", "fusionrec-env", "DATA_URI"): "/data",  # the data volume, mapped like every mount
        })
        pod.materialize()
        with FeedbackStore(store_url) as store:  # what serves: a promotion put it on the models volume
            champion = promote(model_dir, ServingState(store), str(pod.local("/models")), source="test")
        shutil.copytree(demo_dir, pod.local("/data"), dirs_exist_ok=True)
        params = load_params(pod.local("/etc/fusionrec") / "params.yaml").monitor  # the rendered ConfigMap's
        yield Cluster(pod, kfp_api, store_url, params, load_model_view(Path(champion.uri)))


def _runs(reports: Path) -> list[Path]:
    return sorted((reports / "runs").iterdir()) if (reports / "runs").is_dir() else []


def _served_before(url: str, ts: float) -> int:
    with FeedbackStore(url) as store, store.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(served_table)
                                .where(served_table.c.ts < ts)).scalar_one())


def _ancient(traffic: Traffic, params: MonitorConfig, now: float, n: int = 25) -> float:
    """n impressions of an older model past their retention; returns the retention's cutoff."""
    traffic.served += [{**traffic.served[0], "request_id": f"ancient-{i}", "model_version": "an-older-model",
                        "ts": now - (params.served_retention_days + 10) * 86400} for i in range(n)]
    return now - params.served_retention_days * 86400


def test_the_rendered_cronjob_runs_as_written(cluster: Cluster) -> None:
    """Too little feedback for a decision (no drift checks, so it is quick): the command still exits 0,
    leaves its run in a dated folder and the history page, submits nothing and applies the retention."""
    argv = cluster.pod.argv()
    assert argv[argv.index("--data") + 1] == argv[argv.index("--data-uri") + 1] == str(cluster.data)
    now, traffic = time.time(), Traffic(cluster.view)
    traffic.run(cluster.params.min_events // 2, start=now - 3600, step=5.0, shifted=False)
    cutoff = _ancient(traffic, cluster.params, now)
    traffic.flush(cluster.store_url)
    result = cluster.run()
    (run,) = _runs(cluster.reports)
    decision = json.loads((run / "decision.json").read_text())
    assert decision["status"] == "insufficient_data" and decision["retrain"] is False
    assert f"report: {run}/index.html" in result.stdout and (cluster.reports / "index.html").is_file()
    assert _served_before(cluster.store_url, cutoff) == 0 and decision["numbers"]["retention"]["served_dropped"] == 25
    assert not cluster.kfp_api.calls


@pytest.mark.slow  # 1 + monitor.persistence runs with Evidently reports: about a minute
def test_the_rendered_cronjob_monitors_and_submits_a_retraining_run(cluster: Cluster) -> None:
    params, kfp_api, reports = cluster.params, cluster.kfp_api, cluster.reports
    interactions_before = len(pd.read_csv(cluster.data / "interactions.csv"))

    # --- 1. traffic as the model learned it -------------------------------------------------------
    now, traffic = time.time(), Traffic(cluster.view)
    traffic.run(params.reference_window + params.current_window, start=now - 6 * 3600, step=5.0, shifted=False)
    cutoff = _ancient(traffic, params, now)
    traffic.flush(cluster.store_url)
    first = cluster.run()
    (run1,) = _runs(reports)
    decision = json.loads((run1 / "decision.json").read_text())
    assert decision["status"] == "ok" and decision["retrain"] is False, decision["detail"]
    assert decision["numbers"]["windows"]["current_events"] == params.current_window
    assert (run1 / "reports" / "feedback_events.html").is_file() and f"report: {run1}/index.html" in first.stdout
    assert not kfp_api.calls, "no drift: nothing submitted"
    assert _served_before(cluster.store_url, cutoff) == 0 and decision["numbers"]["retention"]["served_dropped"] == 25

    # --- 2. tastes shift; the monitor waits for monitor.persistence runs -----------------------------
    traffic.run(params.current_window + 100, start=now - 3 * 3600, step=5.0, shifted=True)
    traffic.flush(cluster.store_url)
    assert params.persistence >= 1
    for i in range(params.persistence):
        cluster.run()
        latest = json.loads((_runs(reports)[-1] / "decision.json").read_text())
        assert latest["reasons"], latest
        assert latest["retrain"] is (i == params.persistence - 1), latest["detail"]
        if not latest["retrain"]:
            assert not [c for c in kfp_api.calls if c.method == "POST"], "submitted before drift persisted"
    _check_submitted(kfp_api, cluster.data, cluster.store_url, interactions_before)
    _check_history(reports, kfp_api, params)


def _check_submitted(kfp_api: FakeKfp, data_folder: Path, store_url: str, interactions_before: int) -> None:
    """One run of the compiled pipeline, in the pod's namespace, authenticated with the projected
    token, whose data_uri is the dataset that now holds the merged feedback."""
    from pipelines.compile import COMPILED

    (run,) = kfp_api.runs
    (experiment,) = kfp_api.experiments
    assert experiment["display_name"] == "fusionrec-retrain" and experiment["namespace"] == "fusionrec-dev"
    assert run["experiment_id"] == experiment["experiment_id"]
    posts = [c for c in kfp_api.calls if c.method == "POST"]
    assert all(c.headers.get("authorization") == f"Bearer {TOKEN}" for c in posts), "the projected token"
    spec, *platform = list(yaml.safe_load_all(COMPILED.read_text()))
    uploaded = run["pipeline_spec"]
    uploaded = uploaded.get("pipeline_spec", uploaded)
    assert uploaded["pipelineInfo"] == spec["pipelineInfo"]
    assert uploaded["root"]["dag"]["tasks"].keys() == spec["root"]["dag"]["tasks"].keys()
    assert uploaded["deploymentSpec"]["executors"] == json.loads(json.dumps(spec["deploymentSpec"]["executors"]))
    parameters = run["runtime_config"]["parameters"]
    assert parameters["data_uri"] == str(data_folder)
    assert set(parameters) <= set(spec["root"]["inputDefinitions"]["parameters"])
    # the dataset at data_uri holds every feedback event of the store, merged exactly once
    with FeedbackStore(store_url) as store:
        feedback = store.read_feedback()
    mark = json.loads((data_folder / WATERMARK).read_text())
    assert mark["last_feedback_id"] == int(feedback["id"].max())
    merged = pd.read_csv(data_folder / "interactions.csv", dtype={"user_id": str})
    assert len(merged) > interactions_before
    assert merged["user_id"].str.startswith("cron-u").sum() > 0


def _check_history(reports: Path, kfp_api: FakeKfp, params: MonitorConfig) -> None:
    """Every run kept in its own folder; the history page lists them with the submitted run."""
    runs = _runs(reports)
    assert len(runs) == 1 + params.persistence
    lines = [json.loads(x) for x in (reports / "history.jsonl").read_text().splitlines()]
    assert [x["run"] for x in lines] == [f"runs/{r.name}" for r in runs]
    assert [x["retrain"] for x in lines] == [False] * params.persistence + [True]
    assert lines[-1]["retraining"]["id"] == kfp_api.runs[0]["run_id"]
    assert lines[-1]["ctr_current"] < lines[0]["ctr_current"]
    page = (reports / "index.html").read_text()
    assert all(f'href="runs/{r.name}/index.html"' in page for r in runs)
    assert f'/#/runs/details/{kfp_api.runs[0]["run_id"]}"' in page
    assert (reports / "trend.png").is_file()
