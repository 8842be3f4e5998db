"""Every overlay renders, every rendered object validates against pinned Kubernetes
schemas, the YAML is lint-clean, and each overlay has every object it needs."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from k8s_manifests import (
    K8S,
    K8S_VERSIONS,
    OVERLAYS,
    REPO,
    WORKLOAD_KINDS,
    Doc,
    containers,
    find,
    one,
    pod_spec,
    security_violations,
    tool,
)

from fusionrec import __version__

EXPECTED_EVERYWHERE = {
    ("Namespace", None),
    ("Deployment", "fusionrec-serving"),
    ("Service", "fusionrec-serving"),
    ("HorizontalPodAutoscaler", "fusionrec-serving"),
    ("PodDisruptionBudget", "fusionrec-serving"),
    ("NetworkPolicy", "fusionrec-serving"),
    ("ServiceAccount", "fusionrec-serving"),
    ("CronJob", "fusionrec-monitor"),
    ("ServiceAccount", "fusionrec-monitor"),
    ("Role", "fusionrec-monitor-kfp"),
    ("RoleBinding", "fusionrec-monitor-kfp"),
    ("NetworkPolicy", "fusionrec-monitor"),
    ("PersistentVolumeClaim", "fusionrec-reports"),
    ("PersistentVolumeClaim", "fusionrec-models"),
    ("PersistentVolumeClaim", "fusionrec-data"),
    ("Deployment", "fusionrec-reports"),
    ("Service", "fusionrec-reports"),
    ("NetworkPolicy", "fusionrec-reports"),
    ("ServiceAccount", "fusionrec-reports"),
    ("ConfigMap", "fusionrec-params"),
    ("ConfigMap", "fusionrec-env"),
}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_overlay_has_every_object(rendered: dict[str, list[Doc]], overlay: str) -> None:
    docs = rendered[overlay]
    missing = [(k, n) for k, n in sorted(EXPECTED_EVERYWHERE, key=str) if not find(docs, k, n)]
    assert not missing, f"{overlay}: missing {missing}"
    namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
    (ns,) = find(docs, "Namespace")
    assert namespaces == {ns["metadata"]["name"]}, f"{overlay}: objects outside the overlay's namespace"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_rendered_objects_validate_strictly(rendered_text: dict[str, str], overlay: str, tmp_path: Path) -> None:
    """`kubernetes-validate --strict` (unknown fields are errors) against pinned versions."""
    out = tmp_path / f"{overlay}.yaml"
    out.write_text(rendered_text[overlay])
    versions = [arg for v in K8S_VERSIONS for arg in ("-k", v)]
    proc = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--quiet", *versions, str(out)],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, f"k8s/overlays/{overlay} does not validate:\n{proc.stdout}{proc.stderr}"


def test_strict_validation_rejects_an_unknown_field(rendered: dict[str, list[Doc]], tmp_path: Path) -> None:
    """The validator really is strict: a misspelt field fails (guards the test above)."""
    deployment = one(rendered["dev"], "Deployment", "fusionrec-serving")
    bad = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(bad))
    proc = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "--quiet", "-k", K8S_VERSIONS[0], str(path)],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode != 0 and "replica" in proc.stdout + proc.stderr


def test_yamllint_sources_and_rendered(rendered_text: dict[str, str], tmp_path: Path) -> None:
    for name, text in rendered_text.items():
        (tmp_path / f"{name}.yaml").write_text(text)
    # paths relative to the repository: .yamllint's ignore patterns (e.g. `work/`) would match a
    # folder of an absolute path above the checkout (a clone in /work/...) and skip every file
    proc = subprocess.run(
        [tool("yamllint"), "--strict", "-c", ".yamllint", str(K8S.relative_to(REPO)), str(tmp_path)],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert str(K8S.relative_to(REPO)) in subprocess.run(
        [tool("yamllint"), "--list-files", "-c", ".yamllint", str(K8S.relative_to(REPO))],
        capture_output=True, text=True, timeout=60, cwd=REPO).stdout, "yamllint ignored every manifest"
    assert proc.returncode == 0, f"yamllint:\n{proc.stdout}{proc.stderr}"


def test_params_configmap_is_the_root_params_file(rendered: dict[str, list[Doc]]) -> None:
    """kustomize cannot read ../../params.yaml, so k8s/base keeps a copy; it must not drift."""
    root = REPO / "params.yaml"
    copy = K8S / "base" / "params.yaml"
    assert root.exists(), "params.yaml missing at the repository root"
    assert copy.read_text() == root.read_text(), (
        "k8s/base/params.yaml differs from params.yaml: run `cp params.yaml k8s/base/params.yaml`"
    )
    for overlay, docs in rendered.items():
        cm = one(docs, "ConfigMap", "fusionrec-params")
        assert cm["data"]["params.yaml"] == root.read_text(), overlay
        assert cm["metadata"]["name"] != "fusionrec-params", "the name must carry the content hash"


def test_dev_runs_its_own_postgres_on_a_pvc(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["dev"]
    sts = one(docs, "StatefulSet", "fusionrec-postgres")
    (claim,) = sts["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    mounts = {m["name"]: m["mountPath"] for m in sts["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == "/var/lib/postgresql/data"
    assert one(docs, "Service", "fusionrec-postgres")["spec"]["ports"][0]["port"] == 5432
    secret = one(docs, "Secret", "fusionrec-db")
    assert {"feedback-url", "study-url", "postgres-password"} <= set(secret["data"])


def test_prod_commits_no_secret_and_no_database(rendered: dict[str, list[Doc]]) -> None:
    docs = rendered["prod"]
    assert not find(docs, "Secret"), "prod must reference Secrets created out of band, never carry one"
    assert not find(docs, "StatefulSet"), "prod uses an external database"
    refs = set()
    for doc in docs:
        if doc["kind"] in {"Deployment", "CronJob"}:
            text = yaml.safe_dump(doc)
            refs |= {name for name in ("fusionrec-db", "fusionrec-serving-token") if f"name: {name}\n" in text}
    assert refs == {"fusionrec-db", "fusionrec-serving-token"}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serving_and_monitor_take_the_object_store_keys_from_the_pipelines_secret(
        rendered: dict[str, list[Doc]], overlay: str) -> None:
    """An s3:// models root: the pods that fetch and publish champions read the Secret the promoting
    pipeline task reads (pipeline.object_store_secret), optional, so nothing needs it otherwise."""
    from fusionrec.config import PipelineConfig

    docs = rendered[overlay]
    for kind, name in (("Deployment", "fusionrec-serving"), ("CronJob", "fusionrec-monitor")):
        (container,) = containers(pod_spec(one(docs, kind, name)))
        assert container["envFrom"] == [{"secretRef": {"name": PipelineConfig().object_store_secret,
                                                       "optional": True}}], (kind, name)


def _images(docs: list[Doc]) -> set[str]:
    return {c["image"] for d in docs if d["kind"] in WORKLOAD_KINDS for c in containers(pod_spec(d))}


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_image_tags_are_set_in_one_place(rendered: dict[str, list[Doc]], overlay: str) -> None:
    """Manifests name images without a tag; each overlay tags every image in its `images:` only."""
    for path in K8S.rglob("*.yaml"):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") in WORKLOAD_KINDS:
                tagged = {i for i in _images([doc]) if ":" in i.rsplit("/", 1)[-1] or "@" in i}
                assert not tagged, f"{path.relative_to(REPO)}: image tag outside `images:` ({tagged})"
    kustomization = yaml.safe_load((K8S / "overlays" / overlay / "kustomization.yaml").read_text())
    tags = {i["name"]: i.get("newTag") or i.get("digest") for i in kustomization["images"]}
    assert all(tags.values()), f"{overlay}: an `images:` entry without newTag/digest"
    assert {"ghcr.io/fusionrec/fusionrec", "ghcr.io/fusionrec/fusionrec-serving"} <= set(tags)
    for image in _images(rendered[overlay]):
        name, _, tag = image.partition(":")
        assert tags.get(name) == tag, f"{overlay}: {image} is not tagged by the overlay's `images:`"


def test_tools_pod_validates_and_is_locked_down(tmp_path: Path) -> None:
    """k8s/tools (the pod that copies reports out) meets the same bar as the overlays."""
    proc = subprocess.run([tool("kubectl"), "kustomize", str(K8S / "tools")], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    out = tmp_path / "tools.yaml"
    out.write_text(proc.stdout)
    versions = [arg for v in K8S_VERSIONS for arg in ("-k", v)]
    check = subprocess.run([tool("kubernetes-validate"), "--strict", "--quiet", *versions, str(out)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    docs = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert security_violations(docs) == []
    assert {c["image"] for d in docs for c in containers(pod_spec(d))} == {f"ghcr.io/fusionrec/fusionrec:{__version__}"}
