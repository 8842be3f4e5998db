"""The DVC pipeline as its users drive it, with a real `dvc` on a tiny copy of the project:
`dvc exp run -S train.dim=...` retrains only what depends on `train`, `dvc exp show` has one row
of headline metrics per experiment, `dvc plots diff` overlays two runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
TINY = {  # a world of seconds: TF-IDF + colour features, a two-epoch model, one baseline
    "demo": {"users": 60, "items": 120, "interactions": 2400, "image_size": 16},
    "ingest": {"check_images": True},
    "split": {"seed": 2026},
    "featurize": {"text_encoders": ["tfidf"], "image_encoders": ["color"], "tfidf_dim": 16, "num_workers": 0,
                  "torch_threads": 1},
    "train": {"text_encoder": "tfidf", "image_encoder": "color", "dim": 16, "n_layers": 1, "epochs": 2,
              "patience": 1, "batch_size": 512, "n_negatives": 32},
    "search": {"enabled": False},
    "evaluate": {"baselines": ["mostpop"], "plot_ks": [5, 10, 20]},
    "package": {"model_name": "fusionrec-dvc-test"},
}

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _tool(name: str) -> str:
    found = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed")
    return found


@pytest.fixture()
def project(tmp_path: Path) -> tuple[Path, dict[str, str]]:
    """dvc.yaml, the code its stages depend on and a tiny params.yaml in a fresh git + DVC repository."""
    proj = tmp_path / "proj"
    shutil.copytree(ROOT / "src" / "fusionrec", proj / "src" / "fusionrec",
                    ignore=shutil.ignore_patterns("__pycache__"))
    (proj / "serving").mkdir()
    shutil.copy(ROOT / "serving" / "store.py", proj / "serving" / "store.py")
    shutil.copy(ROOT / "dvc.yaml", proj / "dvc.yaml")
    (proj / "params.yaml").write_text(yaml.safe_dump(TINY))
    (proj / ".gitignore").write_text("/work/\n/.bentoml/\n")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "BENTOML_HOME": str(tmp_path / "bentoml"),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.com"}
    git = _tool("git")
    subprocess.run([git, "init", "-q"], cwd=proj, check=True, env=env)
    _run(proj, env, _tool("dvc"), "init", "-q")
    subprocess.run([git, "add", "-A"], cwd=proj, check=True, env=env)
    subprocess.run([git, "commit", "-qm", "tiny project"], cwd=proj, check=True, env=env)
    return proj, env


def _run(proj: Path, env: dict[str, str], *argv: str) -> str:
    done = subprocess.run(list(argv), cwd=proj, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"{' '.join(argv[1:])}: {done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def _ran(output: str) -> list[str]:
    return re.findall(r"Running stage '([\w-]+)'", output)


def test_an_experiment_on_train_params_reruns_only_what_reads_them(project: tuple[Path, dict[str, str]]) -> None:
    proj, env = project
    dvc, git = _tool("dvc"), _tool("git")
    first = _run(proj, env, dvc, "repro")
    assert _ran(first) == ["demo-data", "ingest", "split", "featurize", "search", "train", "evaluate", "package"]
    assert yaml.safe_load((proj / "work/demo/search/best_overlay.yaml").read_text()) == {}  # search off: no overlay
    subprocess.run([git, "add", "dvc.lock"], cwd=proj, check=True, env=env)
    subprocess.run([git, "commit", "-qm", "baseline run"], cwd=proj, check=True, env=env)

    exp = _run(proj, env, dvc, "exp", "run", "-S", "train.dim=8", "-n", "dim8")
    # search reads `train` (its trial 0) so it is rerun, off it only rewrites the empty overlay
    assert _ran(exp) == ["search", "train", "evaluate", "package"]
    trained = json.loads((proj / "work/demo/model/config.json").read_text())
    assert json.dumps(trained).count('"dim": 8') >= 1, "the experiment's train.dim did not reach the model"

    shown = json.loads(_run(proj, env, dvc, "exp", "show", "--json"))
    rows = [exp_ for rev in shown for exp_ in (rev.get("experiments") or [])]
    names = {e["name"]: e for e in rows}
    assert "dim8" in names, list(names)
    files = names["dim8"]["revs"][0]["data"]["metrics"]
    headline = files["work/demo/evaluation/headline.json"]["data"]
    assert {"ndcg@20", "recall@20", "margin_ndcg@20"} <= set(headline)
    assert all(isinstance(v, int | float) for v in headline.values()), "a flat file: one column per number"
    assert "valid_ndcg@20" in files["work/demo/train/metrics.json"]["data"]
    assert files["work/demo/search/metrics.json"]["data"]["enabled"] == 0

    plots = json.loads(_run(proj, env, dvc, "plots", "diff", "HEAD", "--json"))["data"]
    for data_plot in ("work/demo/evaluation/ndcg_by_k.csv", "work/demo/train/history.csv"):
        (vega,) = plots[data_plot]
        assert vega["type"] == "vega" and sorted(vega["revisions"]) == ["HEAD", "workspace"], vega
