"""The committed pipeline YAML is what the code and params.yaml compile to today."""

from __future__ import annotations

from pathlib import Path

import yaml
from pipelines.compile import COMPILED, compile_pipeline, sort_header

from fusionrec.config import PipelineConfig


def test_compiled_pipeline_is_up_to_date(tmp_path: Path) -> None:
    fresh = compile_pipeline(tmp_path / "training.yaml", Path(__file__).resolve().parents[2] / "params.yaml")
    assert COMPILED.exists(), "run `fusionrec pipeline compile` and commit pipelines/compiled/training.yaml"
    assert yaml.safe_load(fresh.read_text()) == yaml.safe_load(COMPILED.read_text()), (
        "pipelines/compiled/training.yaml is out of date: run `fusionrec pipeline compile` and commit it"
    )
    assert fresh.read_text() == COMPILED.read_text(), "same spec, other bytes: recompile with `fusionrec pipeline compile`"


def test_header_defaults_are_sorted_so_the_bytes_are_stable() -> None:
    header = "# Inputs:\n#    cfg: dict [Default: {'b': 1.0, 'a': {'z': [1.0], 'y': True}}]\n#    n: int [Default: 5.0]\n"
    body = "components:\n  x: {'b': 1}\n"
    out = sort_header(header + body)
    assert out == "# Inputs:\n#    cfg: dict [Default: {'a': {'y': True, 'z': [1.0]}, 'b': 1.0}]\n#    n: int [Default: 5.0]\n" + body


def _tasks(spec: dict) -> dict:
    return spec["root"]["dag"]["tasks"]


def test_default_pipeline_searches_in_one_pod_and_gates_package() -> None:
    """Without a study database, the search's workers are processes of one pod (pods share no files)."""
    spec = yaml.safe_load(COMPILED.read_text())
    assert not [t for t in _tasks(spec).values() if "parameterIterator" in t]
    search = _tasks(spec)["search"]["inputs"]["parameters"]
    assert search["shared_study"]["runtimeValue"]["constant"] is False
    assert search["workers"]["runtimeValue"]["constant"] == PipelineConfig().search_workers
    gated = [t for t in _tasks(spec).values() if "condition" in t.get("triggerPolicy", {})]
    assert gated, "package is not behind a dsl.If promotion gate"
    package = spec["components"]["comp-condition-1"]["dag"]["tasks"]["package"]["inputs"]["artifacts"]
    assert "evaluation" in package, "the package task reads the evaluation's promotion.json"
    assert spec["deploymentSpec"]["executors"]["exec-train"]["container"]["image"].startswith("ghcr.io/fusionrec/fusionrec:")


def test_with_a_study_secret_the_search_fans_out_on_the_shared_study(tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"pipeline": {"study_secret": "team-study", "search_workers": 4}}))
    spec, platform = yaml.safe_load_all(compile_pipeline(tmp_path / "training.yaml", params).read_text())
    (loop,) = [t for t in _tasks(spec).values() if "parameterIterator" in t]
    assert loop["parameterIterator"]["items"]["raw"] == "[0, 1, 2, 3]"
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert set(executors) == {"exec-search", "exec-search-2"}, "only the search (workers, summary) reads the study"
    for executor in executors.values():
        (secret,) = executor["secretAsEnv"]
        assert secret["secretName"] == "team-study" and not secret["optional"]
        assert secret["keyToEnv"] == [{"envVar": "FUSIONREC_STUDY_DB", "secretKey": "study-url"}]
    assert "postgresql" not in compile_pipeline(tmp_path / "again.yaml", params).read_text()


def test_every_task_has_requests_limits_and_retries() -> None:
    spec = yaml.safe_load(COMPILED.read_text())
    cfg = PipelineConfig()
    for name, executor in spec["deploymentSpec"]["executors"].items():
        if "container" not in executor:
            continue  # the importer
        step = name.removeprefix("exec-").split("-")[0]
        res, want = executor["container"]["resources"], cfg.task_resources(step)
        assert (res["resourceCpuRequest"], res["resourceCpuLimit"]) == (want.cpu_request, want.cpu_limit), name
        assert (res["resourceMemoryRequest"], res["resourceMemoryLimit"]) == (want.memory_request, want.memory_limit), name
    tasks = {**_tasks(spec), **spec["components"]["comp-condition-1"]["dag"]["tasks"]}
    for name, task in tasks.items():
        if name.startswith(("importer", "condition")):
            continue  # not a pod: the data import and the dsl.If group
        assert task["retryPolicy"]["maxRetryCount"] == cfg.retries, name
        assert task["retryPolicy"]["backoffDuration"] == cfg.retry_backoff, name
