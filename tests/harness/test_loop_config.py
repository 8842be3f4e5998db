"""The closed loop trains what `dvc repro` would: params + the demo's declared overlay, resolved the same way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from fusionrec.config import ConfigError, Params, TrainConfig, load_params
from fusionrec.io import StepResult

ROOT = Path(__file__).resolve().parents[2]


def test_the_demo_loop_settings_are_a_declared_file_the_makefile_passes() -> None:
    from harness.loop import DEMO_OVERLAY, overlay_params

    makefile = (ROOT / "Makefile").read_text()
    assert "--overlay $(LOOP_OVERLAY)" in makefile and f"LOOP_OVERLAY ?= {DEMO_OVERLAY.relative_to(ROOT)}" in makefile
    declared = yaml.safe_load(DEMO_OVERLAY.read_text())
    params = overlay_params(load_params(ROOT / "params.yaml"), DEMO_OVERLAY)
    for section, fields in declared.items():
        assert getattr(params, section).model_dump(include=set(fields)) == fields, section
    assert params.search.enabled is False, "each retrain would otherwise run a whole search"
    untouched = load_params(ROOT / "params.yaml").evaluate
    assert params.evaluate == untouched


@pytest.mark.parametrize(("text", "message"), [("nope: {a: 1}\n", "unknown params section(s) nope"),
                                               ("train: {dimm: 1}\n", "dimm"), ("train: 3\n", "sections of fields")])
def test_a_bad_params_overlay_names_the_file_and_the_problem(tmp_path: Path, text: str, message: str) -> None:
    from harness.loop import overlay_params

    (tmp_path / "o.yaml").write_text(text)
    with pytest.raises(ConfigError) as err:
        overlay_params(Params(), tmp_path / "o.yaml")
    assert message in str(err.value) and "o.yaml" in str(err.value)


@pytest.mark.parametrize("enabled", [True, False])
def test_train_local_trains_params_train_with_the_search_overlay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                 enabled: bool) -> None:
    """The retrain's trainer runs the search step (which honours search.enabled) and trains its overlay."""
    import fusionrec.automl
    import fusionrec.steps
    from fusionrec.monitoring.retrain import train_local

    trained: list[TrainConfig] = []
    for verb in ("ingest", "split", "featurize"):
        monkeypatch.setattr(fusionrec.steps, f"run_{verb}", lambda *a, **k: StepResult())

    def study(_i: Path, _f: Path, _s: Path, out: Path, _cfg: Any, base: TrainConfig) -> StepResult:
        from fusionrec.config import dump_config

        out.mkdir(parents=True)
        dump_config(base.with_overrides(dim=8), out / "best.yaml")
        return StepResult(metrics={"best_trial": 2, "best_valid_ndcg@20": 0.3}, outputs={"best": out / "best.yaml"})

    monkeypatch.setattr(fusionrec.automl, "run_search", study)
    monkeypatch.setattr(fusionrec.steps, "run_train", lambda *a: trained.append(a[4]) or StepResult())
    params = Params().model_copy(update={"search": Params().search.with_overrides(enabled=enabled)})
    assert train_local(tmp_path / "data", tmp_path / "run", params) == tmp_path / "run" / "model"
    (cfg,) = trained
    assert cfg == (params.train.with_overrides(dim=8) if enabled else params.train)
