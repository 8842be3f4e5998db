"""`fusionrec featurize INGESTED_DIR OUT_DIR` through Typer's CliRunner."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from fusionrec.cli.app import app
from fusionrec.features.store import load_features


def test_featurize_command(catalogue: Path, tmp_path: Path) -> None:
    import fusionrec.cli.features  # noqa: F401  (registers the command)

    params = tmp_path / "params.yaml"
    params.write_text(f"featurize:\n  num_workers: 0\n  quality_k: 2\n  cache_dir: {tmp_path / 'cache'}\n")
    out = tmp_path / "features"
    result = CliRunner().invoke(app, ["featurize", str(catalogue), str(out), "--params", str(params),
                                      "--text", "tfidf", "--image", "color"])
    assert result.exit_code == 0, result.output
    assert "image:color.coverage" in result.output
    assert set(load_features(out)) == {"text:tfidf", "image:color"}


def test_featurize_command_reports_bad_input(tmp_path: Path) -> None:
    import fusionrec.cli.features  # noqa: F401

    result = CliRunner().invoke(app, ["featurize", str(tmp_path), str(tmp_path / "o"), "--text", "bert"])
    assert result.exit_code == 1
    assert "featurize failed" in result.output
