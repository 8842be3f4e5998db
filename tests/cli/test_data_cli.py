"""`fusionrec demo-data`, `ingest` and `split` through Typer's CliRunner on tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from fusionrec import schema
from fusionrec.cli import app

runner = CliRunner()


def _invoke(*args: str):  # noqa: ANN202
    return runner.invoke(app, [str(a) for a in args])


def test_demo_ingest_split_chain(tmp_path: Path) -> None:
    demo, ing, split = tmp_path / "demo", tmp_path / "ingested", tmp_path / "split"
    res = _invoke("demo-data", demo, "--seed", "3", "--users", "40", "--items", "60",
                  "--interactions", "800", "--image-size", "24", "--params", tmp_path / "none.yaml")
    assert res.exit_code == 0, res.output
    assert "interactions=800" in res.output and (demo / "truth" / "truth.json").is_file()

    res = _invoke("ingest", demo, ing, "--params", tmp_path / "none.yaml")
    assert res.exit_code == 0, res.output
    assert json.loads((ing / schema.REPORT).read_text())["interactions"] == 800

    res = _invoke("split", ing, split, "--protocol", "temporal-loo", "--params", tmp_path / "none.yaml")
    assert res.exit_code == 0, res.output
    report = json.loads((split / schema.REPORT).read_text())
    assert report["protocol"] == "temporal-loo"
    assert report["parts"]["test"]["rows"] == report["parts"]["test"]["users"]


def test_params_file_and_overrides(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("demo:\n  users: 20\n  items: 30\n  interactions: 200\n  image_size: 16\n")
    res = _invoke("demo-data", tmp_path / "demo", "--params", params, "--interactions", "300")
    assert res.exit_code == 0, res.output
    inter = pd.read_csv(tmp_path / "demo" / "interactions.csv")
    assert len(inter) == 300 and inter[schema.USER_ID].nunique() == 20


def test_external_split_option(split_dir: Path, ingested_dir: Path, tmp_path: Path) -> None:
    res = _invoke("split", ingested_dir, tmp_path / "ext", "--external", split_dir)
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "ext" / schema.REPORT).read_text())["protocol"] == "external"


def test_errors_are_messages_not_tracebacks(tmp_path: Path) -> None:
    res = _invoke("ingest", tmp_path / "missing", tmp_path / "out")
    assert res.exit_code == 1
    assert "no items.csv or items.parquet" in res.output and "Traceback" not in res.output

    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "items.csv").write_text("item_id,title\n1,x\n")
    (bad / "interactions.csv").write_text("user,item_id\na,1\n")
    res = _invoke("ingest", bad, tmp_path / "out")
    assert res.exit_code == 1 and "'user_id'" in res.output and "Traceback" not in res.output

    (bad / "interactions.csv").write_text("user_id,item_id\na,1\n")  # no timestamp: fine, but no temporal split
    assert _invoke("ingest", bad, tmp_path / "out").exit_code == 0
    res = _invoke("split", tmp_path / "out", tmp_path / "s", "--protocol", "temporal-loo")
    assert res.exit_code == 1 and "timestamp" in res.output and "Traceback" not in res.output

    res = _invoke("split", tmp_path / "out", tmp_path / "s", "--protocol", "sideways")
    assert res.exit_code == 2 and "protocol" in res.output
