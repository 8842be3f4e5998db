"""How the trained configuration is resolved: params.yaml's train section + the search's overlay."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fusionrec.config import ConfigError, SearchConfig, TrainConfig
from fusionrec.steps import (
    OVERLAY_FILE,
    read_overlay,
    resolve_train_config,
    run_search,
    search_overlay,
    write_overlay,
)


def test_the_overlay_holds_only_what_the_search_changed_and_resolves_back_to_the_best() -> None:
    base = TrainConfig(dim=64, lr=0.03, ease_blend=0.5)
    best = base.with_overrides(dim=32, fusion="mean")
    best = TrainConfig(**{**best.model_dump(), "ease_blend": None})  # "choose on validation" is a value too
    overlay = search_overlay(best, base)
    assert overlay == {"dim": 32, "fusion": "mean", "ease_blend": None}


def test_a_written_overlay_is_read_back_and_laid_over_the_base(tmp_path: Path) -> None:
    base = TrainConfig(dim=64, ease_blend=0.5)
    path = write_overlay({"dim": 32, "ease_blend": None}, tmp_path / OVERLAY_FILE, "trial 3")
    assert path.read_text().startswith("# trial 3")
    resolved = resolve_train_config(base, path)
    assert (resolved.dim, resolved.ease_blend, resolved.lr) == (32, None, base.lr)
    assert resolve_train_config(base, write_overlay({}, tmp_path / "empty.yaml", "off")) == base
    assert resolve_train_config(base, None) == base


@pytest.mark.parametrize(("text", "message"), [
    ("dimm: 3\n", "unknown train field(s) dimm"),
    ("dim: many\n", "dim"),
    ("- dim\n", "expected a mapping"),
])
def test_a_bad_overlay_says_which_file_and_field(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / OVERLAY_FILE
    path.write_text(text)
    with pytest.raises(ConfigError, match=None) as err:
        resolve_train_config(TrainConfig(), path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_a_missing_overlay_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="fusionrec search"):
        read_overlay(tmp_path / "absent.yaml")


def test_a_search_switched_off_trains_the_base_as_it_is(tmp_path: Path) -> None:
    """No data is read: the folders need not even exist."""
    result = run_search(tmp_path / "i", tmp_path / "f", tmp_path / "s", tmp_path / "search",
                        SearchConfig(enabled=False), TrainConfig())
    assert yaml.safe_load(result.outputs["overlay"].read_text()) == {}
    assert result.metrics == {"enabled": 0, "n_trials": 0, "overlay_fields": 0}
    assert (tmp_path / "search" / "history.csv").read_text().splitlines() == ["trial,valid_ndcg@20,best_valid_ndcg@20"]
    assert (tmp_path / "search" / "study" / "summary.json").is_file()
