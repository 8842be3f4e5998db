"""Security settings of every workload, network isolation and least-privilege RBAC.

The checker (`security_violations`) is itself tested: removing any one required setting
from any container of any rendered workload must be reported, so the suite cannot pass
on manifests that lost a setting.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import pytest
from k8s_manifests import (
    OVERLAYS,
    WORKLOAD_KINDS,
    Doc,
    containers,
    find,
    one,
    pod_labels,
    pod_spec,
    security_violations,
)

SERVING = {"app.kubernetes.io/name": "fusionrec", "app.kubernetes.io/component": "serving"}
MONITOR = {"app.kubernetes.io/name": "fusionrec", "app.kubernetes.io/component": "monitor"}
DATABASE = {"app.kubernetes.io/name": "fusionrec", "app.kubernetes.io/component": "database"}
REPORTS = {"app.kubernetes.io/name": "fusionrec", "app.kubernetes.io/component": "reports"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_is_locked_down(rendered: dict[str, list[Doc]], overlay: str) -> None:
    workloads = [d for d in rendered[overlay] if d["kind"] in WORKLOAD_KINDS]
    assert len(workloads) >= 2
    assert security_violations(rendered[overlay]) == []


def _drop(path: tuple[str, ...]) -> Callable[[Doc, Doc], None]:
    def mutate(pod: Doc, container: Doc) -> None:
        target = container if path[0] == "container" else pod
        *parents, leaf = path[1:]
        for key in parents:
            target = target.get(key) or {}
        target.pop(leaf, None)
    return mutate


def _set(path: tuple[str, ...], value: object) -> Callable[[Doc, Doc], None]:
    def mutate(pod: Doc, container: Doc) -> None:
        target = container if path[0] == "container" else pod
        *parents, leaf = path[1:]
        for key in parents:
            target = target.setdefault(key, {})
        target[leaf] = value
    return mutate


def _both(*mutations: Callable[[Doc, Doc], None]) -> Callable[[Doc, Doc], None]:
    def mutate(pod: Doc, container: Doc) -> None:
        for m in mutations:
            m(pod, container)
    return mutate


# Each entry takes one setting away, at both levels where Kubernetes lets it be set.
MUTATIONS = {
    "runAsNonRoot": _both(_drop(("container", "securityContext", "runAsNonRoot")),
                          _drop(("pod", "securityContext", "runAsNonRoot"))),
    "runAsNonRoot false": _set(("container", "securityContext", "runAsNonRoot"), False),
    "runAsUser 0": _set(("container", "securityContext", "runAsUser"), 0),
    "readOnlyRootFilesystem": _drop(("container", "securityContext", "readOnlyRootFilesystem")),
    "readOnlyRootFilesystem false": _set(("container", "securityContext", "readOnlyRootFilesystem"), False),
    "allowPrivilegeEscalation": _drop(("container", "securityContext", "allowPrivilegeEscalation")),
    "privileged": _set(("container", "securityContext", "privileged"), True),
    "capabilities.drop": _drop(("container", "securityContext", "capabilities", "drop")),
    "capabilities.add": _set(("container", "securityContext", "capabilities", "add"), ["NET_ADMIN"]),
    "seccompProfile": _both(_drop(("container", "securityContext", "seccompProfile")),
                            _drop(("pod", "securityContext", "seccompProfile"))),
    "seccomp Unconfined": _set(("container", "securityContext", "seccompProfile"), {"type": "Unconfined"}),
    "limits": _drop(("container", "resources", "limits")),
    "requests.memory": _drop(("container", "resources", "requests", "memory")),
    "automountServiceAccountToken": _drop(("pod", "automountServiceAccountToken")),
    "hostNetwork": _set(("pod", "hostNetwork"), True),
}


@pytest.mark.parametrize("overlay", OVERLAYS)
@pytest.mark.parametrize("setting", sorted(MUTATIONS))
def test_removing_any_setting_is_caught(rendered: dict[str, list[Doc]], overlay: str, setting: str) -> None:
    for index, doc in enumerate(rendered[overlay]):
        if doc["kind"] not in WORKLOAD_KINDS:
            continue
        for c_index, _ in enumerate(containers(pod_spec(doc))):
            docs = copy.deepcopy(rendered[overlay])
            spec = pod_spec(docs[index])
            MUTATIONS[setting](spec, list(containers(spec))[c_index])
            where = f"{doc['kind']}/{doc['metadata']['name']}"
            assert any(p.startswith(where) for p in security_violations(docs)), f"{setting} removed from {where} unnoticed"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serving_probes_and_writable_paths(rendered: dict[str, list[Doc]], overlay: str) -> None:
    deployment = one(rendered[overlay], "Deployment", "fusionrec-serving")
    spec = pod_spec(deployment)
    (c,) = spec["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz"), ("startupProbe", "/healthz")):
        get = c[probe]["httpGet"]
        assert get["path"] == path, probe
        assert ports.get(get["port"], get["port"]) == 3000, probe
    # read-only root: BentoML's home and /tmp are emptyDirs
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in c["volumeMounts"]}
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert "emptyDir" in mounts["/tmp"]
    assert "emptyDir" in mounts[env["BENTOML_HOME"]]
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_workload_is_isolated_by_a_network_policy(rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = rendered[overlay]
    policies = find(docs, "NetworkPolicy")
    for doc in docs:
        if doc["kind"] not in WORKLOAD_KINDS:
            continue
        labels = pod_labels(doc)
        selecting = [p for p in policies
                     if p["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items()]
        assert selecting, f"{doc['kind']}/{doc['metadata']['name']}: no NetworkPolicy selects it"
        for p in selecting:
            assert sorted(p["spec"]["policyTypes"]) == ["Egress", "Ingress"], p["metadata"]["name"]


def _egress_ports(policy: Doc) -> list[set[int]]:
    return [{p["port"] for p in rule["ports"]} for rule in policy["spec"]["egress"]]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serving_network_policy(rendered: dict[str, list[Doc]], overlay: str) -> None:
    policy = one(rendered[overlay], "NetworkPolicy", "fusionrec-serving")
    assert policy["spec"]["podSelector"]["matchLabels"] == SERVING
    (ingress,) = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"port": 3000, "protocol": "TCP"}], "ingress only to the service port"
    assert _egress_ports(policy) == [{53}, {5432}], "egress only to DNS and the database"
    db_rule = policy["spec"]["egress"][1]["to"]
    if overlay == "dev":
        assert db_rule == [{"podSelector": {"matchLabels": DATABASE}}]
    else:
        assert all(set(peer) == {"ipBlock"} for peer in db_rule), "prod: the external database's CIDR"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_monitor_network_policy(rendered: dict[str, list[Doc]], overlay: str) -> None:
    policy = one(rendered[overlay], "NetworkPolicy", "fusionrec-monitor")
    assert policy["spec"]["podSelector"]["matchLabels"] == MONITOR
    assert not policy["spec"].get("ingress"), "the monitor accepts no connections"
    assert _egress_ports(policy) == [{53}, {5432}, {8888}], "DNS, database, KFP API only"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_reports_ui_reads_the_monitors_volume_and_opens_nothing(rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = rendered[overlay]
    ui, cronjob = one(docs, "Deployment", "fusionrec-reports"), one(docs, "CronJob", "fusionrec-monitor")
    spec = pod_spec(ui)
    (c,) = spec["containers"]
    volumes = {v["name"]: v for v in spec["volumes"]}
    (mount,) = c["volumeMounts"]
    claim = volumes[mount["name"]]["persistentVolumeClaim"]
    assert mount["readOnly"] is True and claim["readOnly"] is True, "the UI never writes the reports"
    monitor_claims = {v["persistentVolumeClaim"]["claimName"]: v["name"] for v in pod_spec(cronjob)["volumes"]
                      if "persistentVolumeClaim" in v}
    (monitor_c,) = pod_spec(cronjob)["containers"]
    monitor_mounts = {m["name"]: m["mountPath"] for m in monitor_c["volumeMounts"]}
    assert monitor_mounts[monitor_claims[claim["claimName"]]] == "/reports", "the volume the monitor writes"
    assert c["args"][c["args"].index("--directory") + 1] == mount["mountPath"]
    port = c["ports"][0]["containerPort"]
    assert c["readinessProbe"]["httpGet"]["port"] == "http" and c["ports"][0]["name"] == "http"
    service = one(docs, "Service", "fusionrec-reports")
    assert service["spec"]["selector"] == REPORTS and service["spec"]["ports"][0]["targetPort"] == "http"
    policy = one(docs, "NetworkPolicy", "fusionrec-reports")
    assert policy["spec"]["podSelector"]["matchLabels"] == REPORTS
    (ingress,) = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"port": port, "protocol": "TCP"}] and not policy["spec"].get("egress")
    assert one(docs, "ServiceAccount", "fusionrec-reports")["automountServiceAccountToken"] is False


def test_dev_database_accepts_only_fusionrec_pods(rendered: dict[str, list[Doc]]) -> None:
    policy = one(rendered["dev"], "NetworkPolicy", "fusionrec-postgres")
    assert policy["spec"]["podSelector"]["matchLabels"] == DATABASE
    (rule,) = policy["spec"]["ingress"]
    assert rule["ports"] == [{"port": 5432, "protocol": "TCP"}]
    assert {"matchLabels": SERVING} in [peer["podSelector"] for peer in rule["from"]]
    assert not policy["spec"].get("egress")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_monitor_rbac_is_least_privilege(rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = rendered[overlay]
    role = one(docs, "Role", "fusionrec-monitor-kfp")
    rules = {(g, r): sorted(rule["verbs"]) for rule in role["rules"]
             for g in rule["apiGroups"] for r in rule["resources"]}
    assert rules == {
        ("pipelines.kubeflow.org", "experiments"): ["create", "get", "list"],
        ("pipelines.kubeflow.org", "runs"): ["create", "get"],
    }
    assert not find(docs, "ClusterRole") and not find(docs, "ClusterRoleBinding")
    binding = one(docs, "RoleBinding", "fusionrec-monitor-kfp")
    assert binding["roleRef"] == {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                                  "name": "fusionrec-monitor-kfp"}
    namespace = role["metadata"]["namespace"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "fusionrec-monitor", "namespace": namespace}]
    cronjob = one(docs, "CronJob", "fusionrec-monitor")
    spec = pod_spec(cronjob)
    assert spec["serviceAccountName"] == "fusionrec-monitor"
    (token,) = [v for v in spec["volumes"] if "projected" in v]
    (source,) = token["projected"]["sources"]
    assert source["serviceAccountToken"]["audience"] == "pipelines.kubeflow.org"
    # the serving pods get no RBAC at all
    assert [b["subjects"][0]["name"] for b in find(docs, "RoleBinding")] == ["fusionrec-monitor"]
    assert one(docs, "ServiceAccount", "fusionrec-serving")["automountServiceAccountToken"] is False
