"""The manifests agree with what they deploy: image names and tags with
components/Dockerfile, serving/bentofile.yaml and the package version; ports with
ServeConfig.port; users with the images' users (docs/CONTRACTS.md, "Images and ports")."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import yaml
from k8s_manifests import OVERLAYS, REPO, Doc, one, pod_spec

import fusionrec
from fusionrec.config import PipelineConfig, load_params

SERVING_IMAGE = "ghcr.io/fusionrec/fusionrec-serving"
PIPELINE_IMAGE = "ghcr.io/fusionrec/fusionrec"
DOCKERFILE = REPO / "components" / "Dockerfile"
BENTOFILE = REPO / "serving" / "bentofile.yaml"


def _image(doc: Doc) -> tuple[str, str]:
    (container,) = pod_spec(doc)["containers"]
    name, _, tag = container["image"].partition(":")
    return name, tag


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1]) for line in lines]


def test_pipeline_image_name_is_the_same_everywhere() -> None:
    spec = importlib.util.spec_from_file_location("components_image", REPO / "components" / "image.py")
    assert spec and spec.loader, "components/image.py missing"
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.IMAGE_REPO == PIPELINE_IMAGE
    assert PipelineConfig().image == PIPELINE_IMAGE
    assert load_params(REPO / "params.yaml").pipeline.image == PIPELINE_IMAGE


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_workload_images_and_tags(rendered: dict[str, list[Doc]], overlay: str) -> None:
    """Both images are tagged with the package version: a release bumps the overlays too."""
    docs = rendered[overlay]
    assert _image(one(docs, "Deployment", "fusionrec-serving")) == (SERVING_IMAGE, fusionrec.__version__)
    assert _image(one(docs, "CronJob", "fusionrec-monitor")) == (PIPELINE_IMAGE, fusionrec.__version__)


def test_dockerfile_builds_the_pipeline_image_as_documented() -> None:
    instructions = _dockerfile_instructions()
    bases = [args.split()[0] for op, args in instructions if op == "FROM"]
    for base in bases:
        assert re.fullmatch(r"python:3\.11\.\d+-slim(-\w+)?", base), f"pinned python:3.11.x-slim expected, got {base}"
    runs = [args for op, args in instructions if op == "RUN"]
    wheel = next(i for i, r in enumerate(runs) if "pip wheel" in r and "--no-deps" in r)
    lock = next(i for i, r in enumerate(runs) if "-r /tmp/requirements.lock" in r)
    package = next(i for i, r in enumerate(runs) if "--no-deps /tmp/dist/*.whl" in r)
    assert wheel < lock < package, "build the wheel, install requirements.lock, then the wheel with --no-deps"
    envs = " ".join(args for op, args in instructions if op == "ENV")
    assert "PYTHONPATH" not in envs, "a pod runs the installed wheel, never source folders on PYTHONPATH"
    assert not re.search(r"snapshot_download|hf_hub_download|huggingface-cli|torch\.hub|wget |curl ",
                         DOCKERFILE.read_text()), "model weights come from packages, never a download"
    (version,) = [args.split("=", 1)[1] for op, args in instructions if op == "ARG" and args.startswith("VERSION=")]
    assert version == fusionrec.__version__
    (user,) = [args for op, args in instructions if op == "USER"]
    assert user.split(":")[0].isdigit() and int(user.split(":")[0]) != 0, "numeric non-root USER (runAsNonRoot)"


def test_dockerfile_copies_only_what_exists_and_is_not_ignored() -> None:
    ignore = (REPO / "components" / "Dockerfile.dockerignore").read_text().splitlines()
    for op, args in _dockerfile_instructions():
        if op != "COPY" or "--from=" in args:
            continue
        *sources, _ = [a for a in args.split() if not a.startswith("--")]
        for source in sources:
            path = REPO / source
            assert path.is_file() or (path.is_dir() and any(path.iterdir())), f"COPY {source}: missing or empty"
            assert f"!{source.rstrip('/')}" in {line.rstrip("/") for line in ignore}, (
                f"COPY {source}: excluded by components/Dockerfile.dockerignore"
            )


def test_image_carries_the_compiled_pipeline() -> None:
    """`fusionrec monitor --trigger kfp` submits the compiled pipeline from inside the image (wheel data)."""
    assert (REPO / "pipelines" / "compiled" / "training.yaml").is_file(), (
        "pipelines/compiled/training.yaml missing: `fusionrec pipeline compile`"
    )
    assert "compiled/*.yaml" in (REPO / "pyproject.toml").read_text(), "the wheel must ship the compiled pipeline"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_monitor_runs_as_the_dockerfile_user(rendered: dict[str, list[Doc]], overlay: str) -> None:
    (user,) = [args for op, args in _dockerfile_instructions() if op == "USER"]
    uid, _, gid = user.partition(":")
    sc = pod_spec(one(rendered[overlay], "CronJob", "fusionrec-monitor"))["securityContext"]
    assert (sc["runAsUser"], sc["runAsGroup"]) == (int(uid), int(gid or uid))


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serving_port_is_the_configured_port(rendered: dict[str, list[Doc]], overlay: str) -> None:
    port = load_params(REPO / "params.yaml").serve.port
    assert port == 3000, "docs/CONTRACTS.md: service port 3000"
    docs = rendered[overlay]
    deployment = one(docs, "Deployment", "fusionrec-serving")
    (c,) = pod_spec(deployment)["containers"]
    assert c["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
    assert c["args"][c["args"].index("--port") + 1] == str(port)
    assert "PORT" not in {e["name"] for e in c["env"]}, "$PORT would override the port in the bento entrypoint"
    service = one(docs, "Service", "fusionrec-serving")
    assert service["spec"]["ports"] == [{"name": "http", "port": port, "targetPort": "http", "protocol": "TCP"}]
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port) and annotations["prometheus.io/path"] == "/metrics"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serving_matches_the_bento(rendered: dict[str, list[Doc]], overlay: str) -> None:
    """The bento is `fusionrec-serving` (so `bentoml containerize` yields the image name), runs as
    BentoML's container user, and reads the settings the Deployment gives it."""
    if not BENTOFILE.exists():
        pytest.skip("serving/bentofile.yaml not written yet")
    bentofile = yaml.safe_load(BENTOFILE.read_text())
    assert bentofile.get("name") == SERVING_IMAGE.rsplit("/", 1)[1]
    bento_env = {e["name"]: str(e.get("value")) for e in bentofile.get("envs", [])}
    for name in ("BENTOML_PORT", "PORT"):
        assert bento_env.get(name, "3000") == "3000", f"bentofile sets {name}"
    (c,) = pod_spec(one(rendered[overlay], "Deployment", "fusionrec-serving"))["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert {"FUSIONREC_PARAMS", "FUSIONREC_FEEDBACK_URL", "FUSIONREC_TOKEN"} <= set(env)
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert str(Path(env["FUSIONREC_PARAMS"]["value"]).parent) in mounts
    assert load_params(REPO / "params.yaml").serve.token_env == "FUSIONREC_TOKEN"
    # BentoML's container user: the uid `bentoml containerize` bakes into the image
    bentoml = importlib.util.find_spec("bentoml")  # located, not imported
    assert bentoml and bentoml.origin
    generate = Path(bentoml.origin).parent / "_internal" / "container" / "generate.py"
    uid = int(re.search(r"^BENTO_UID_GID = (\d+)", generate.read_text(), re.M).group(1))
    sc = pod_spec(one(rendered[overlay], "Deployment", "fusionrec-serving"))["securityContext"]
    assert sc["runAsUser"] == uid
