"""`fusionrec pipeline submit`: the arguments and client calls it builds, with a fake kfp client."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml
from pipelines.compile import COMPILED
from pipelines.submit import TOKEN_ENV, check_cron, client_options, submit

ROOT = Path(__file__).resolve().parents[2]


class FakeClient:
    """Records what submit asks of kfp.Client."""

    made: list[FakeClient] = []

    def __init__(self, **options: Any) -> None:
        self.options, self.calls = options, []
        FakeClient.made.append(self)

    def create_run_from_pipeline_package(self, pipeline_file: str, **kwargs: Any) -> SimpleNamespace:
        self.calls.append(("run", pipeline_file, kwargs))
        return SimpleNamespace(run_id="run-123")

    def create_experiment(self, name: str, namespace: str | None = None) -> SimpleNamespace:
        self.calls.append(("experiment", name, {"namespace": namespace}))
        return SimpleNamespace(experiment_id="exp-1")

    def create_recurring_run(self, **kwargs: Any) -> SimpleNamespace:
        self.calls.append(("recurring", kwargs.get("pipeline_package_path"), kwargs))
        return SimpleNamespace(recurring_run_id="rec-9")


@pytest.fixture(autouse=True)
def no_cluster(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Outside a pod: no namespace variable, no token file."""
    FakeClient.made.clear()
    monkeypatch.delenv("KFP_NAMESPACE", raising=False)
    monkeypatch.setenv(TOKEN_ENV, str(tmp_path / "no-token"))


@pytest.mark.parametrize("cron", ["0 0 3 * * *", "0 30 2 * * MON-FRI", "*/30 * * * * ?"])
def test_six_field_cron_is_accepted(cron: str) -> None:
    assert check_cron(cron) == cron


@pytest.mark.parametrize("cron", ["0 3 * * *", "0 0 3 * * * 2027", "", "0 0 3 * * ;rm"])
def test_other_cron_is_refused_with_the_expected_form(cron: str) -> None:
    with pytest.raises(ValueError, match="cron"):
        check_cron(cron)


def test_one_run(tmp_path: Path) -> None:
    package = tmp_path / "training.yaml"
    package.write_text("{}")
    out = submit("http://kfp:8888", {"data_uri": "s3://b/d"}, package, experiment="exp", make_client=FakeClient)
    assert out == {"kind": "run", "id": "run-123", "host": "http://kfp:8888",
                   "url": "http://kfp:8888/#/runs/details/run-123"}
    (client,) = FakeClient.made
    assert client.options == {"host": "http://kfp:8888"}
    (call,) = client.calls
    assert call == ("run", str(package), {"arguments": {"data_uri": "s3://b/d"}, "experiment_name": "exp",
                                          "namespace": None})


def test_recurring_run_in_a_pod_uses_the_token_and_namespace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    package = tmp_path / "training.yaml"
    package.write_text("{}")
    token = tmp_path / "token"
    token.write_text("sa-token")
    monkeypatch.setenv(TOKEN_ENV, str(token))
    monkeypatch.setenv("KFP_NAMESPACE", "team-recs")
    out = submit("http://kfp:8888", {"data_uri": "s3://b/d"}, package, recurring="0 0 3 * * 1", make_client=FakeClient)
    assert out["kind"] == "recurring" and out["id"] == "rec-9"
    assert out["url"] == "http://kfp:8888/#/recurringrun/details/rec-9"
    (client,) = FakeClient.made
    assert client.options["namespace"] == "team-recs"
    assert type(client.options["credentials"]).__name__ == "ServiceAccountTokenVolumeCredentials"
    experiment, recurring = client.calls
    assert experiment == ("experiment", "fusionrec", {"namespace": "team-recs"})
    kwargs = recurring[2]
    assert kwargs["cron_expression"] == "0 0 3 * * 1" and kwargs["experiment_id"] == "exp-1"
    assert kwargs["params"] == {"data_uri": "s3://b/d"} and kwargs["pipeline_package_path"] == str(package)


def test_bad_cron_fails_before_any_client_is_made(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="6"):
        submit("http://kfp:8888", {}, tmp_path / "missing.yaml", recurring="0 3 * * *", make_client=FakeClient)
    assert FakeClient.made == []


def test_namespace_argument_wins_over_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KFP_NAMESPACE", "from-env")
    assert client_options("http://h", "given")["namespace"] == "given"
    assert "credentials" not in client_options("http://h")


def test_cli_arguments_are_the_compiled_pipelines_parameters() -> None:
    from fusionrec.cli.pipeline import _arguments

    args = _arguments(ROOT / "params.yaml", "s3://bucket/data")
    spec, *_platform = yaml.safe_load_all(COMPILED.read_text())
    declared = spec["root"]["inputDefinitions"]["parameters"]
    assert set(args) <= set(declared), f"unknown pipeline parameters {set(args) - set(declared)}"
    assert args["data_uri"] == "s3://bucket/data"
    assert args["search_cfg"]["space"]["fusion"], "the search space travels inside search_cfg"
    assert all(v is not None for v in args["train_cfg"].values()), "kfp parameters cannot hold None"


@pytest.mark.parametrize("study_secret", ["", "fusionrec-study-db"])
def test_cli_submit_compiles_from_params_and_prints_the_run_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                                study_secret: str) -> None:
    """No database URL among the run's parameters; the search's shape follows params.yaml."""
    import pipelines.submit
    from typer.testing import CliRunner

    from fusionrec.cli import app

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"pipeline": {"study_secret": study_secret, "search_workers": 3}}))
    seen: dict[str, Any] = {}

    def fake_submit(host: str, arguments: dict[str, Any], pipeline_file: Path, **kwargs: Any) -> dict[str, str]:
        seen.update(host=host, arguments=arguments, spec=yaml.safe_load_all(Path(pipeline_file).read_text()), **kwargs)
        seen["spec"] = list(seen["spec"])
        return {"kind": "run", "id": "r-1", "host": host, "url": f"{host}/#/runs/details/r-1"}

    monkeypatch.setattr(pipelines.submit, "submit", fake_submit)
    result = CliRunner().invoke(app, ["pipeline", "submit", "--host", "http://kfp:8888", "--data-uri", "s3://b/d",
                                      "--params", str(params)])
    assert result.exit_code == 0, result.output
    assert "http://kfp:8888/#/runs/details/r-1" in result.output.splitlines()
    assert not [k for k in seen["arguments"] if "db" in k or "storage" in k]
    assert seen["arguments"]["search_cfg"].get("storage", "") == ""
    pipeline, platform = seen["spec"]
    loops = [t for t in pipeline["root"]["dag"]["tasks"].values() if "parameterIterator" in t]
    executors = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    searches = {name: e for name, e in executors.items() if name.startswith("exec-search")}
    if study_secret:
        assert loops and "3 search pods" in result.output
        assert searches and all(
            e["secretAsEnv"] == [{"keyToEnv": [{"envVar": "FUSIONREC_STUDY_DB", "secretKey": "study-url"}],
                                  "optional": False, "secretName": study_secret,
                                  "secretNameParameter": {"runtimeValue": {"constant": study_secret}}}]
            for e in searches.values())
    else:
        assert not loops and not searches and "one search pod with 3 worker processes" in result.output
    assert set(executors) - set(searches) == {"exec-package"}, "only the promoting task reads the serving state"


def test_submit_rejects_an_unknown_option(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fusionrec.cli import app

    result = CliRunner().invoke(app, ["pipeline", "submit", "--host", "h", "--data-uri", "d", "--study-db", "x"])
    assert result.exit_code == 2, "database URLs are not run parameters"
