"""Shared fixtures: a tiny demo dataset, ingested and split once per test session.

Every suite can ask for `demo_dir` (the raw dataset + truth/), `ingested_dir`,
`split_dir` (random-811), `tiny_demo_cfg`, `taste_model` and `ml100k_dir` (skips when
../shared/datasets/ml100k-mm is absent). The session fixtures are read-only: a test
that needs to modify a dataset copies it to its own tmp_path first.

Databases: `postgres` is a real PostgreSQL server of the session (tests/postgres.py; started
on first use, never skipped), and `db_url` runs a test once on SQLite and once on a fresh
PostgreSQL database.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
ML100K = Path(os.environ.get("FUSIONREC_ML100K", REPO.parent / "shared" / "datasets" / "ml100k-mm"))

from tests.postgres import LocalPostgres, start_in_session  # noqa: E402

from fusionrec.config import DemoConfig, IngestConfig, SplitConfig  # noqa: E402

# Fixtures shared beyond one folder: the tiny trained model, features and service fixtures.
pytest_plugins = ["tests.serving.serving_fixtures"]

TINY_DEMO = DemoConfig(users=80, items=150, interactions=3000, image_size=32)


@pytest.fixture(scope="session")
def tiny_demo_cfg() -> DemoConfig:
    """The configuration of the session's tiny demo (80 users, 150 items, 3000 interactions, 32px)."""
    return TINY_DEMO


@pytest.fixture(scope="session")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny demo dataset folder (items.csv, interactions.csv, images/, truth/)."""
    from fusionrec.data.demo import run_demo_data

    out = tmp_path_factory.mktemp("demo") / "data"
    run_demo_data(out, TINY_DEMO)
    return out


@pytest.fixture(scope="session")
def ingested_dir(demo_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny demo after `run_ingest` (with the `hour` context column)."""
    from fusionrec.data.ingest import run_ingest

    out = tmp_path_factory.mktemp("ingested") / "ingested"
    run_ingest(demo_dir, out, IngestConfig())
    return out


@pytest.fixture(scope="session")
def split_dir(ingested_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny demo split random-811 (train/valid/test.parquet + report.json)."""
    from fusionrec.data.splits import run_split

    out = tmp_path_factory.mktemp("split") / "random-811"
    run_split(ingested_dir, out, SplitConfig(protocol="random-811"))
    return out


@pytest.fixture(scope="session")
def taste_model(demo_dir: Path):  # noqa: ANN201  (fusionrec.data.demo.TasteModel)
    """The ground-truth taste model of the tiny demo."""
    from fusionrec.data.demo import TasteModel

    return TasteModel.load(demo_dir)


@pytest.fixture(scope="session")
def ml100k_dir() -> Path:
    """../shared/datasets/ml100k-mm (or $FUSIONREC_ML100K); the test skips when it is absent."""
    if not (ML100K / "interactions.csv").is_file():
        pytest.skip(f"ml100k-mm not found at {ML100K}")
    return ML100K


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalPostgres]:
    """A PostgreSQL 18 server for this session on 127.0.0.1 (`.new_database(prefix)` -> URL, `.admin_url`).

    A server that cannot start fails the tests that need it, with its log: never a skip.
    """
    server = start_in_session(tmp_path_factory)
    yield server
    server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A SQLAlchemy URL of an empty database: a SQLite file under tmp_path, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'test.db'}"
    server: LocalPostgres = request.getfixturevalue("postgres")
    return server.new_database(request.node.name)


# The files that take half a minute or more, longest first, collected before the rest: `make test`
# spreads whole files over its processes in collection order, and a long file handed out last keeps
# one process busy after the others have finished.
LONG_FILES = (
    "tests/pipelines/test_cluster_run.py",
    "tests/components/test_components.py",
    "tests/test_automl.py",
    "tests/serving/test_replica_state.py",
    "tests/test_inference.py",
    "tests/monitoring/test_monitor.py",
    "tests/k8s/test_k8s_serving_run.py",
    "tests/monitoring/test_cli_monitor.py",
    "tests/inference/test_ann.py",
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Long files first (LONG_FILES order), every other test in its collected order."""
    missing = [path for path in LONG_FILES if not (REPO / path).is_file()]
    if missing:
        raise pytest.UsageError(f"tests/conftest.py LONG_FILES names files that do not exist: {missing}")
    rank = {path: i for i, path in enumerate(LONG_FILES)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))
