"""The monitor CronJob runs a real `fusionrec` command: its args parse against the CLI.

The args are parsed by the very Click command that Typer builds (`make_context` checks every
option, choice and type without running the command), with the kubelet's $(VAR)
expansion and the pod's mounts stood in by local values. test_k8s_cronjob_run.py runs it.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import typer
from k8s_manifests import OVERLAYS, REPO, Doc, one, pod_spec
from typer.testing import CliRunner

from fusionrec.cli import app

EXPECTED_ARGS = [
    "monitor", "--store", "$(FUSIONREC_FEEDBACK_URL)", "--out", "/reports",
    "--trigger", "kfp", "--kfp-host", "$(KFP_HOST)", "--data", "/data", "--data-uri", "$(DATA_URI)",
    "--params", "/etc/fusionrec/params.yaml",
]


def _monitor_container(docs: list[Doc]) -> tuple[Doc, Doc]:
    spec = pod_spec(one(docs, "CronJob", "fusionrec-monitor"))
    (container,) = spec["containers"]
    return spec, container


def test_monitor_help() -> None:
    result = CliRunner().invoke(app, ["monitor", "--help"])
    assert result.exit_code == 0, f"`fusionrec monitor --help` failed:\n{result.output}"
    for option in ("--store", "--model-dir", "--out", "--trigger", "--kfp-host", "--data", "--data-uri", "--params"):
        assert option in result.output


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_cronjob_command_parses_against_the_cli(rendered: dict[str, list[Doc]], overlay: str,
                                                 tmp_path: Path) -> None:
    spec, container = _monitor_container(rendered[overlay])
    assert container["command"] == ["fusionrec"]
    assert container["args"] == EXPECTED_ARGS
    # the kubelet expands $(VAR) from the container's env: every one must be defined there
    env = {e["name"] for e in container["env"]}
    used = set(re.findall(r"\$\((\w+)\)", " ".join(container["args"])))
    assert used <= env, f"undefined in env: {used - env}"
    # every path argument lies on a volume the pod mounts (reports writable, models read-only)
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/reports"].get("readOnly") is not True
    assert mounts["/data"].get("readOnly") is not True, "the merge writes the dataset"
    assert mounts["/models"]["readOnly"] is True
    claims = {v["name"]: v.get("persistentVolumeClaim", {}).get("claimName") for v in spec["volumes"]}
    assert claims[mounts["/data"]["name"]] == "fusionrec-data"
    assert "/etc/fusionrec" in mounts
    params_volume = next(v for v in spec["volumes"] if v["name"] == mounts["/etc/fusionrec"]["name"])
    assert params_volume["configMap"]["name"].startswith("fusionrec-params")

    local = {
        "$(FUSIONREC_FEEDBACK_URL)": "postgresql+psycopg://fusionrec:pw@fusionrec-postgres:5432/fusionrec",
        "$(KFP_HOST)": "http://ml-pipeline.kubeflow.svc.cluster.local:8888",
        "$(DATA_URI)": "minio://mlpipeline/fusionrec/data",
        "/reports": str(tmp_path / "reports"),
        "/data": str(tmp_path / "data"),
        "/etc/fusionrec/params.yaml": str(REPO / "params.yaml"),
    }
    for path in ("reports", "data"):
        (tmp_path / path).mkdir(parents=True)
    args = [local.get(a, a) for a in container["args"]]

    group = typer.main.get_command(app)  # the Click group Typer builds (typer vendors its own click)
    with group.context_class(group, info_name="fusionrec") as root:
        command = group.get_command(root, args[0])
        assert command is not None, "`fusionrec monitor` does not exist"
        ctx = command.make_context(args[0], args[1:], parent=root)
    trigger = ctx.params.get("trigger")
    assert getattr(trigger, "value", trigger) == "kfp", ctx.params
    assert not ctx.args, f"unparsed arguments: {ctx.args}"
