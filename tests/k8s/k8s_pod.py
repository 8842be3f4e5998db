"""Run a rendered container's command on this machine the way the kubelet would start it.

`LocalPod` takes a rendered workload and one of its containers and builds:
- the env: `value`s, and `valueFrom` ConfigMap and Secret keys read from the rendered objects
  (a test may give its own value for a key that exists there: a database URL, an endpoint),
  `fieldRef: metadata.namespace`; `$(VAR)` in values expanded from the variables defined before;
- the mounts: every `mountPath` becomes a folder under `root` (ConfigMap volumes hold their
  keys as files, a projected ServiceAccount token holds a token), and every env value or
  argument that names a path under a mount is rewritten to the local folder, consistently;
- the argv: `command` + `args` with `$(VAR)` expanded from the env as the kubelet does
  (`$$` escapes, an undefined variable stays as written).
Nothing else of this process's environment reaches the command.
"""

from __future__ import annotations

import base64
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from k8s_manifests import Doc, find, one, pod_spec

VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
TOKEN = "test-projected-service-account-token"


def expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion: defined variables are replaced, `$$` is a literal `$`."""
    def repl(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))
    return VAR.sub(repl, text)


@dataclass
class LocalPod:
    """A container of a rendered workload, laid out under `root` (see the module doc).

    Args:
        docs: every rendered object of the overlay (ConfigMaps and Secrets are read from it).
        workload: the rendered Deployment/CronJob/...; container: its container's name.
        root: the folder the pod's mounts are mapped into (root/<mountPath>).
        values: test values for ConfigMap/Secret keys, {(kind, name, key): value}; each key must
            exist in the rendered objects.
    """

    docs: list[Doc]
    workload: Doc
    container_name: str
    root: Path
    values: dict[tuple[str, str, str], str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.spec = pod_spec(self.workload)
        (self.container,) = [c for c in self.spec["containers"] if c["name"] == self.container_name]
        self.volumes = {v["name"]: v for v in self.spec.get("volumes", [])}
        self.mounts = {m["mountPath"]: m for m in self.container.get("volumeMounts", [])}
        self.used_values: set[tuple[str, str, str]] = set()

    # --- mounts ------------------------------------------------------------------------
    def local(self, mount_path: str) -> Path:
        """The local folder of a mount path."""
        assert mount_path in self.mounts, f"{mount_path} is not mounted in container {self.container_name}"
        return self.root / mount_path.lstrip("/")

    def map_paths(self, text: str) -> str:
        """Rewrite a path under a mount (the longest mount first) to its local folder."""
        for mount in sorted(self.mounts, key=len, reverse=True):
            if text == mount or text.startswith(mount.rstrip("/") + "/"):
                return str(self.local(mount)) + text[len(mount):]
        return text

    def materialize(self) -> None:
        """Create every mount's folder; fill ConfigMap volumes with their keys and projected
        ServiceAccount tokens with a token file."""
        for path, mount in self.mounts.items():
            folder = self.local(path)
            folder.mkdir(parents=True, exist_ok=True)
            volume = self.volumes[mount["name"]]
            if "configMap" in volume:
                for key, text in self._object("ConfigMap", volume["configMap"]["name"])["data"].items():
                    (folder / key).write_text(text)
            for source in volume.get("projected", {}).get("sources", []):
                if "serviceAccountToken" in source:
                    (folder / source["serviceAccountToken"]["path"]).write_text(TOKEN)

    # --- env -----------------------------------------------------------------------------
    def _object(self, kind: str, name: str) -> Doc:
        return one(self.docs, kind, name)

    def _key(self, kind: str, name: str, key: str) -> str:
        doc = self._object(kind, name)
        data = doc.get("data", {})
        assert key in data, f"{kind} {name} has no key {key!r}"
        for wanted, given in self.values.items():  # keyed by the name before kustomize's hash suffix
            v_kind, v_name, v_key = wanted
            if (v_kind, v_key) == (kind, key) and re.fullmatch(re.escape(v_name) + r"(-[a-z0-9]{10})?", name):
                self.used_values.add(wanted)
                return given
        return base64.b64decode(data[key]).decode() if kind == "Secret" else str(data[key])

    def env(self) -> dict[str, str]:
        """The container's environment, resolved and path-mapped (in the container's order)."""
        raw: dict[str, str] = {}
        for source in self.container.get("envFrom", []):  # first: an `env` entry of the same name wins
            secret = "secretRef" in source
            kind, ref = ("Secret", source["secretRef"]) if secret else ("ConfigMap", source["configMapRef"])
            found = find(self.docs, kind, ref["name"])
            assert found or ref.get("optional"), f"envFrom: no {kind} {ref['name']!r} and it is not optional"
            for doc in found:
                for key in doc.get("data", {}):
                    raw[source.get("prefix", "") + key] = self._key(kind, doc["metadata"]["name"], key)
        for e in self.container.get("env", []):
            if "value" in e:
                value = expand(str(e["value"]), raw)
            else:
                source = e["valueFrom"]
                if "configMapKeyRef" in source:
                    ref = source["configMapKeyRef"]
                    value = self._key("ConfigMap", ref["name"], ref["key"])
                elif "secretKeyRef" in source:
                    ref = source["secretKeyRef"]
                    value = self._key("Secret", ref["name"], ref["key"])
                elif source.get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
                    value = self.workload["metadata"]["namespace"]
                else:
                    raise AssertionError(f"env {e['name']}: unsupported source {source}")
            raw[e["name"]] = value
        unused = set(self.values) - self.used_values
        assert not unused, f"test values for keys the container never reads: {unused}"
        self._raw_env = raw
        return {k: self.map_paths(v) for k, v in raw.items()}

    def argv(self) -> list[str]:
        """command + args, $(VAR)-expanded from the (unmapped) env, then path-mapped."""
        raw = getattr(self, "_raw_env", None)
        if raw is None:
            self.env()
            raw = self._raw_env
        words = self.container.get("command", []) + self.container.get("args", [])  # no command: the image's entrypoint
        return [self.map_paths(expand(a, raw)) for a in words]

    # --- run -------------------------------------------------------------------------------
    def run(self, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
        """Run argv with only the container's env (plus PATH to this environment's bin, where the
        image has its console scripts), in `cwd` (the image's empty working directory)."""
        argv = self.argv()
        env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", **self.env()}
        executable = Path(sys.executable).parent / argv[0]
        assert executable.is_file(), f"{argv[0]}: not a console script of this environment"
        cwd.mkdir(parents=True, exist_ok=True)
        return subprocess.run([str(executable), *argv[1:]], cwd=cwd, env=env, capture_output=True, text=True,
                              timeout=timeout)

    def describe(self) -> dict[str, Any]:
        return {"argv": self.argv(), "env": self.env()}
