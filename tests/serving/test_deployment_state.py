"""The rendered serving Deployment gives every replica what following the shared state needs: the
feedback database the monitor uses, the models volume read-only (where promotions put the champion),
and a poll interval in the params it reads."""

from __future__ import annotations

import pytest
import yaml
from tests.k8s.k8s_manifests import OVERLAYS, one, pod_spec, render


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict]]:
    return {name: [d for d in yaml.safe_load_all(render(name)) if d] for name in OVERLAYS}


def _env(container: dict) -> dict[str, dict]:
    return {e["name"]: e for e in container.get("env", [])}


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_replicas_read_the_champion_from_the_monitors_models_volume(rendered: dict, overlay: str) -> None:
    docs = rendered[overlay]
    serving, monitor = pod_spec(one(docs, "Deployment", "fusionrec-serving")), pod_spec(
        one(docs, "CronJob", "fusionrec-monitor"))
    claims = {v["name"]: v["persistentVolumeClaim"] for v in serving["volumes"] if "persistentVolumeClaim" in v}
    (container,) = serving["containers"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    (models,) = [name for name, claim in claims.items() if claim["claimName"] == "fusionrec-models"]
    assert claims[models].get("readOnly") is True and mounts[models].get("readOnly") is True
    monitor_claims = {v["persistentVolumeClaim"]["claimName"] for v in monitor["volumes"] if "persistentVolumeClaim" in v}
    assert "fusionrec-models" in monitor_claims, "the same volume promotions write to"
    (monitor_c,) = monitor["containers"]
    feedback = _env(container)["FUSIONREC_FEEDBACK_URL"]["valueFrom"]["secretKeyRef"]
    monitor_refs = [e["valueFrom"]["secretKeyRef"] for e in monitor_c.get("env", [])
                    if "secretKeyRef" in e.get("valueFrom", {})]
    assert feedback in monitor_refs, "replicas and the monitor share one database"


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_the_params_every_replica_reads_make_it_poll(rendered: dict, overlay: str) -> None:
    docs = rendered[overlay]
    spec = pod_spec(one(docs, "Deployment", "fusionrec-serving"))
    (container,) = spec["containers"]
    params_path = _env(container)["FUSIONREC_PARAMS"]["value"]
    volume = next(v for v in spec["volumes"] if v.get("configMap"))
    config_map = next(d for d in docs if d["kind"] == "ConfigMap"
                      and d["metadata"]["name"] == volume["configMap"]["name"])
    serve = yaml.safe_load(config_map["data"][params_path.rsplit("/", 1)[1]])["serve"]
    assert 0 < serve["poll_interval_s"] <= 10, "a new item or champion reaches every replica within seconds"


def test_prod_lets_replicas_on_several_nodes_mount_the_models_volume(rendered: dict) -> None:
    claim = one(rendered["prod"], "PersistentVolumeClaim", "fusionrec-models")
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
