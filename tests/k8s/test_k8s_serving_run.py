"""The serving Deployment works as rendered: two replicas of its container on one database.

The dev overlay is rendered with kustomize and the serving container's env, mounts and args are
resolved from the rendered objects (tests/k8s/k8s_pod.py), with test values for what only a
cluster has: the database URL (the suite's real PostgreSQL) and the bearer token. Each replica
gets its own emptyDirs (/tmp, BentoML's home) and params ConfigMap folder; the models claim is
one folder both replicas mount, as a PersistentVolumeClaim is.

The container runs the bento image, whose entrypoint turns the args `serve --port 3000` into
`bentoml serve --port 3000 $BENTO_PATH`. The image is emulated by what `bentoml containerize`
puts at $BENTO_PATH: the bento built from the bentofile and the wheel, with the models it names
copied into its own models/ folder. Each replica runs that command (its port replaced by a free
one, bound to 127.0.0.1) with nothing but the pod's env, in an empty working folder.

- An item added on replica a (with the token of the rendered Secret's key) is recommended by
  replica b within NEW_ITEM_WITHIN_S.
- Both replicas start on the champion the models volume holds; a second model published there
  and made the champion reaches both under a bounded concurrent load with no failed request.
- SIGTERM, as Kubernetes stops a pod, ends every process of both replicas within the pod's
  terminationGracePeriodSeconds; nothing is left running.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from k8s_manifests import REPO, Doc, one, pod_spec
from k8s_pod import LocalPod
from tests.serving.servers import MARK, SESSION, TOKEN, Load, Server, call, free_port, leftovers
from tests.wheel_env import build_wheel

from fusionrec.config import ServeConfig, load_params
from fusionrec.monitoring.rollout import promote
from fusionrec.monitoring.state import Champion, ServingState
from fusionrec.monitoring.store import FeedbackStore

pytestmark = pytest.mark.integration

OVERLAY = "dev"
NEW_ITEM_WITHIN_S = 5.0
NEW_ITEM = "k8s-replica-new"
BIN = Path(sys.executable).parent
# What `bentoml containerize` does to a bento (bentoml/_internal/container/__init__.py): copy it
# and resolve every model it names into its models/ folder. Run with the build machine's BENTOML_HOME.
CONTAINERIZE_LAYOUT = """
import shutil, sys
from pathlib import Path
from _bentoml_sdk.models import BentoModel
from bentoml._internal.bento.bento import BaseBentoInfo
src, dest = map(Path, sys.argv[1:])
shutil.copytree(src, dest)
with open(src / "bento.yaml", "rb") as fh:
    info = BaseBentoInfo.from_yaml_file(fh)
assert info.all_models, "the bento names no model"
for model in info.all_models:
    assert model.registry == "bentoml", model
    BentoModel.from_info(model).resolve(dest / "models")
"""


@dataclass
class ReplicaPod(LocalPod):
    """A LocalPod whose PersistentVolumeClaim mounts are one folder per claim under `claims`,
    shared by every replica as the claim is; its other mounts are its own (under `root`)."""

    claims: Path | None = None

    def local(self, mount_path: str) -> Path:
        assert mount_path in self.mounts, f"{mount_path} is not mounted in container {self.container_name}"
        volume = self.volumes[self.mounts[mount_path]["name"]]
        if "persistentVolumeClaim" in volume:
            assert self.claims is not None
            return self.claims / volume["persistentVolumeClaim"]["claimName"]
        return super().local(mount_path)


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    out = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, f"{' '.join(argv[:3])} failed:\n{out.stdout[-2000:]}{out.stderr[-3000:]}"
    return out.stdout


@pytest.fixture(scope="module")
def bento_path(model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """$BENTO_PATH of the serving image: the model packaged, the bento built from the bentofile and
    the wheel (as tests/serving/test_package.py does), laid out as `bentoml containerize` does."""
    tmp = tmp_path_factory.mktemp("serving-image")
    build_env = {**os.environ, "BENTOML_HOME": str(tmp / "build-home"), "BENTOML_DO_NOT_TRACK": "true",
                 "HF_HUB_OFFLINE": "1"}
    _run([sys.executable, "-c", "from fusionrec.cli import main; main()", "package", str(model_dir),
          str(tmp / "package"), "--params", str(tmp / "absent.yaml")], REPO, build_env)
    context = tmp / "context"
    (context / "serving").mkdir(parents=True)
    shutil.copy(REPO / "serving" / "bentofile.yaml", context / "serving")
    for name in ("params.yaml", "requirements-serving.lock"):  # the files the bentofile names
        shutil.copy(REPO / name, context)
    build_wheel(context / "dist")
    _run([str(BIN / "bentoml"), "build", "-f", "serving/bentofile.yaml", "."], context, build_env)
    (built,) = (tmp / "build-home" / "bentos" / "fusionrec-serving").glob("*/bento.yaml")
    image = tmp / "image" / "bento"
    _run([sys.executable, "-c", CONTAINERIZE_LAYOUT, str(built.parent), str(image)], tmp, build_env)
    return image


@dataclass
class Replicas:
    a: Server
    b: Server
    pods: list[ReplicaPod]
    url: str
    cfg: ServeConfig
    models_root: Path
    first: Champion


def _start(pod: ReplicaPod, bento: Path) -> Server:
    """The container's command as the image's entrypoint runs it, with only the pod's env."""
    env = pod.env()
    assert "command" not in pod.container, "a command replaces the bento image's entrypoint"
    argv = pod.argv()  # the container has no command: these are the args of the bento image's entrypoint
    assert argv[:1] == ["serve"] and "--port" in argv, f"args the bento entrypoint does not turn into `bentoml serve`: {argv}"
    args, port = argv[1:], free_port()
    args[args.index("--port") + 1] = str(port)
    # PATH: where the image has its console scripts; MARK: lets the leftover check find the processes.
    env = {"PATH": f"{BIN}:/usr/bin:/bin", **env, MARK: SESSION}
    workdir = pod.root / "workdir"
    workdir.mkdir(parents=True, exist_ok=True)
    log = pod.root / "serve.log"
    with open(log, "ab") as out:
        # --host: this machine's servers bind 127.0.0.1 only; in the pod BentoML binds 0.0.0.0
        proc = subprocess.Popen([str(BIN / "bentoml"), "serve", *args, "--host", "127.0.0.1", str(bento)],
                                cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    return Server(proc, port, log)


@pytest.fixture(scope="module")
def replicas(rendered: dict[str, list[Doc]], bento_path: Path, model_dir: Path, postgres,  # noqa: ANN001
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[Replicas]:
    docs = rendered[OVERLAY]
    deployment = one(docs, "Deployment", "fusionrec-serving")
    spec = pod_spec(deployment)
    tmp = tmp_path_factory.mktemp("serving-pods")
    url = postgres.new_database("k8s_serving")
    values = {("Secret", "fusionrec-db", "feedback-url"): url, ("Secret", "fusionrec-serving-token", "token"): TOKEN}
    pods = [ReplicaPod(docs, deployment, "serving", tmp / name, values, claims=tmp / "claims") for name in ("a", "b")]
    for pod in pods:
        pod.materialize()
    models_root = pods[0].local("/models")
    assert models_root == pods[1].local("/models")
    # the champion the models volume holds when the pods start (a pipeline's package task put it there)
    with FeedbackStore(url) as store:
        first = promote(model_dir, ServingState(store), str(models_root), source="test: first")
    cfg = load_params(pods[0].env()["FUSIONREC_PARAMS"]).serve
    servers = [_start(pod, bento_path) for pod in pods]
    grace = float(spec["terminationGracePeriodSeconds"])
    probe = next(c for c in spec["containers"] if c["name"] == "serving")["startupProbe"]
    try:
        for srv in servers:
            srv.wait_ready(timeout=probe["periodSeconds"] * probe["failureThreshold"])
        yield Replicas(servers[0], servers[1], pods, url, cfg, models_root, first)
    finally:
        survivors = [line for srv in servers for line in srv.stop(timeout=grace)]
    assert survivors == [], f"still running {grace:.0f} s after SIGTERM (then killed): {survivors}"
    assert leftovers() == []


def _ranked(base: str, source: str, k: int) -> list[str]:
    status, body = call(base, "/recommend", {"user_id": "k8s-visitor", "k": k, "recent_items": [source],
                                             "explain": False})
    assert status == 200, body
    return [it["item_id"] for it in body["items"]]


def _metadata(base: str) -> dict[str, Any]:
    status, body = call(base, "/metadata", {})
    assert status == 200, body
    return body


def test_an_item_added_on_one_replica_is_served_by_the_other(replicas: Replicas, ingested_dir: Path) -> None:
    a, b, k = replicas.a.base, replicas.b.base, replicas.cfg.max_k
    catalogue = pd.read_parquet(ingested_dir / "items.parquet").set_index("item_id")
    source = str(call(a, "/similar", {"item_id": str(catalogue.index[0]), "k": 1})[1]["items"][0]["item_id"])
    row = catalogue.loc[source]
    image = base64.b64encode(Path(row["image_path"]).read_bytes()).decode() if isinstance(
        row["image_path"], str) else None
    item = {"item_id": NEW_ITEM, "text": row["text"], "title": "copy", "image_base64": image}
    assert NEW_ITEM not in _ranked(b, source, k)
    assert call(a, "/add_item", item)[0] == 401  # the write endpoints want the Secret's token
    status, added = call(a, "/add_item", item, token=True)
    assert status == 200, added
    acked = time.monotonic()
    while NEW_ITEM not in _ranked(b, source, k) and time.monotonic() - acked < 30:
        time.sleep(0.1)
    seen_after = time.monotonic() - acked
    print(f"k8s replicas: item added on a served by b after {seen_after:.2f} s "
          f"(serve.poll_interval_s {replicas.cfg.poll_interval_s})")
    assert seen_after < NEW_ITEM_WITHIN_S, f"replica b served the new item after {seen_after:.1f} s"
    similar = [it["item_id"] for it in call(b, "/similar", {"item_id": NEW_ITEM, "k": 3})[1]["items"]]
    assert source in similar


def test_a_promotion_reaches_both_replicas_without_a_failed_request(replicas: Replicas, model_dir: Path,
                                                                   tmp_path: Path) -> None:
    a, b = replicas.a.base, replicas.b.base
    for base in (a, b):  # both started on the champion of the models volume, not the bento's model
        meta = _metadata(base)
        assert meta["model_version"] == replicas.first.model_version
        assert meta["champion"]["id"] == replicas.first.id
    assert Path(replicas.first.uri).parent == replicas.models_root.resolve()

    v2 = Path(shutil.copytree(model_dir, tmp_path / "v2"))
    config = json.loads((v2 / "config.json").read_text())
    config["meta"]["version"] = "k8s-v2"
    (v2 / "config.json").write_text(json.dumps(config))
    users = [str(u) for u in pd.read_parquet(model_dir / "users.parquet")["user_id"].head(20)]
    with Load([a, b], users) as load:
        while load.ok < 50 and not load.failed:
            time.sleep(0.05)
        ok_before = load.ok
        with FeedbackStore(replicas.url) as store:
            champ = promote(v2, ServingState(store), str(replicas.models_root), source="test: second")
        moved = time.monotonic()
        while ({_metadata(base)["model_version"] for base in (a, b)} != {champ.model_version}
               and time.monotonic() - moved < 60):
            time.sleep(0.1)
        swap_s = time.monotonic() - moved
        ok_at_swap = load.ok
        time.sleep(1.0)  # keep the load on the new model for a moment
    print(f"k8s replicas: promotion on both after {swap_s:.2f} s; load {load.ok} ok / {load.failed} failed "
          f"({ok_at_swap - ok_before} while the pointer moved and both swapped)")
    assert {_metadata(base)["model_version"] for base in (a, b)} == {champ.model_version}
    assert load.failed == 0, load.errors[:5]
    assert load.ok > ok_at_swap > ok_before >= 50, "requests before, during and after the swap"
    for base in (a, b):
        assert _metadata(base)["champion"]["id"] == champ.id
