"""A virtual environment holding the serving lock's distributions and nothing else, then the fusionrec wheel.

Installing the serving set from the package index would download about 6 GB (torch and its CUDA
runtime) on every run. The distributions are already installed in this venv by pip, from the same
wheels at the same versions (requirements-serving.lock is a subset of requirements.lock), so the
new environment gets exactly their files: every file a serving distribution's RECORD lists is
symlinked to the same relative path in the new site-packages (dist-info folders included, so
installers see them as installed). A file of any other distribution is absent, even inside a
folder shared by several (nvidia/, opentelemetry/). Console scripts are left out (their shebang
names this venv's interpreter): run tools as `python -m <module>`.

The wheel is then installed by uv, offline and with dependency resolution, as the bento's
install script does: a requirement of the wheel that the serving set does not satisfy fails here.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import subprocess
import sys
import sysconfig
import venv
from dataclasses import dataclass
from pathlib import Path

from tools.serving_lock import read_lock

BIN = Path(sys.executable).parent


@dataclass(frozen=True)
class ServingEnv:
    root: Path
    linked_files: int

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    def site_packages(self) -> Path:
        return self.root / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" / "site-packages"

    def run(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """`python *args` in the environment, from its root, with no PYTHONPATH."""
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        return subprocess.run([str(self.python), *args], capture_output=True, text=True, timeout=timeout,
                              cwd=self.root, env=env)


def link_distribution(name: str, site: Path) -> int:
    """Symlink every file of one installed distribution (its RECORD) under site; returns how many."""
    here = Path(os.path.normpath(sysconfig.get_paths()["purelib"]))
    dist = md.distribution(name)
    if dist.files is None:
        raise LookupError(f"{name} has no RECORD: its files cannot be listed")
    linked, folders = 0, set()
    for entry in dist.files:
        source = Path(os.path.normpath(str(dist.locate_file(entry))))
        if not source.is_relative_to(here) or not source.is_file():
            continue  # a console script in bin/, or bytecode never written
        target = site / source.relative_to(here)
        if target.parent not in folders:
            target.parent.mkdir(parents=True, exist_ok=True)
            folders.add(target.parent)
        if not target.exists():
            target.symlink_to(source)
            linked += 1
    return linked


def make_serving_env(root: Path, lock: Path, wheel: Path) -> ServingEnv:
    """A venv at root with the distributions of `lock` (this venv's files) and the wheel installed."""
    venv.create(root, with_pip=False, symlinks=True)
    site = ServingEnv(root, 0).site_packages()
    linked = sum(link_distribution(name, site) for name in read_lock(lock))
    env = ServingEnv(root, linked)
    out = subprocess.run([str(BIN / "uv"), "pip", "install", "--offline", "--no-cache", "--python", str(env.python),
                          str(wheel)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"the wheel does not install over {lock.name}:\n{out.stdout}{out.stderr}"
    return env
