"""The committed pipeline YAML is what the code and params.yaml compile to today."""

from __future__ import annotations

from pathlib import Path

import yaml
from pipelines.compile import COMPILED, compile_pipeline, sort_header

from fusionrec.config import MonitorConfig, PipelineConfig


def test_compiled_pipeline_is_up_to_date(tmp_path: Path) -> None:
    fresh = compile_pipeline(tmp_path / "training.yaml", Path(__file__).resolve().parents[2] / "params.yaml")
    assert COMPILED.exists(), "run `fusionrec pipeline compile` and commit pipelines/compiled/training.yaml"
    assert list(yaml.safe_load_all(fresh.read_text())) == list(yaml.safe_load_all(COMPILED.read_text())), (
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


def _compiled() -> tuple[dict, dict]:
    """The committed pipeline spec and its Kubernetes executors (secrets, volumes)."""
    spec, platform = yaml.safe_load_all(COMPILED.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_default_pipeline_searches_in_one_pod_and_gates_package() -> None:
    """Without a study database, the search's workers are processes of one pod (pods share no files)."""
    spec, _ = _compiled()
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
    assert set(executors) == {"exec-search", "exec-search-2", "exec-package"}
    for name in ("exec-search", "exec-search-2"):  # only the search (workers, summary) reads the study
        (secret,) = executors[name]["secretAsEnv"]
        assert secret["secretName"] == "team-study" and not secret["optional"]
        assert secret["keyToEnv"] == [{"envVar": "FUSIONREC_STUDY_DB", "secretKey": "study-url"}]
    assert "postgresql" not in compile_pipeline(tmp_path / "again.yaml", params).read_text()


def test_every_task_has_requests_limits_and_retries() -> None:
    spec, _ = _compiled()
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


def test_the_promoted_branch_rolls_the_model_out_to_serving() -> None:
    """The package task reads the serving state's URL from the Secret the serving pods read (optional:
    a run without it packages only) and the object store's keys from the Secret the serving pods take
    them from (optional), mounts the models volume where the serving pods mount it, and publishes
    there by default."""
    spec, executors = _compiled()
    cfg = PipelineConfig()
    secrets = {s["secretName"]: s for s in executors["exec-package"]["secretAsEnv"]}
    assert set(secrets) == {cfg.state_secret, cfg.object_store_secret} == {"fusionrec-db", "fusionrec-object-store"}
    secret = secrets["fusionrec-db"]
    assert secret["optional"] is True
    assert secret["keyToEnv"] == [{"envVar": "FUSIONREC_FEEDBACK_URL", "secretKey": "feedback-url"}]
    store = secrets["fusionrec-object-store"]
    assert store["optional"] is True
    assert {(k["secretKey"], k["envVar"]) for k in store["keyToEnv"]} == {
        (k, k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL")}
    (mount,) = executors["exec-package"]["pvcMount"]
    assert (mount["constant"], mount["mountPath"]) == (cfg.models_pvc, "/models") == ("fusionrec-models", "/models")
    assert spec["root"]["inputDefinitions"]["parameters"]["models_root"]["defaultValue"] == "/models"
    package = spec["components"]["comp-condition-1"]["dag"]["tasks"]["package"]["inputs"]["parameters"]
    assert package["models_root"] == {"componentInputParameter": "pipelinechannel--models_root"}
    assert package["run_id"]["runtimeValue"]["constant"] == "{{$.pipeline_job_uuid}}"
    assert package["keep_models"]["runtimeValue"]["constant"] == MonitorConfig().keep_models == 3  # old folders go


def test_the_models_root_default_follows_the_params(tmp_path: Path) -> None:
    """An object-store root is kept; a path of the monitor's machine gives way to the mounted volume;
    without a volume and a state Secret, the package task only packages."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"monitor": {"models_root": "s3://models/fusionrec"},
                                      "pipeline": {"models_pvc": ""}}))
    spec, *platform = yaml.safe_load_all(compile_pipeline(tmp_path / "s3.yaml", params).read_text())
    assert spec["root"]["inputDefinitions"]["parameters"]["models_root"]["defaultValue"] == "s3://models/fusionrec"
    executors = platform[0]["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert "pvcMount" not in executors["exec-package"] and executors["exec-package"]["secretAsEnv"]

    params.write_text(yaml.safe_dump({"monitor": {"models_root": "/srv/fusionrec/models"}}))
    spec, _ = yaml.safe_load_all(compile_pipeline(tmp_path / "pvc.yaml", params).read_text())
    assert spec["root"]["inputDefinitions"]["parameters"]["models_root"]["defaultValue"] == "/models"

    params.write_text(yaml.safe_dump({"pipeline": {"state_secret": "", "models_pvc": "", "object_store_secret": ""}}))
    assert len(list(yaml.safe_load_all(compile_pipeline(tmp_path / "plain.yaml", params).read_text()))) == 1
