"""An interpreter that has what a pod has: the fusionrec wheel plus the locked dependencies.

The wheel is built from the checkout with the same command the image's build stage runs
(`pip wheel --no-deps .`) and installed into a fresh virtual environment. The dependencies
are not installed a second time: the test environment's site-packages is appended to the new
environment's path with a `.pth` line. Python adds such a folder to sys.path without reading
the `.pth` files inside it, so the editable install of the checkout there stays inactive, and
`import fusionrec` finds the wheel only.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import venv
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class WheelEnv:
    """A virtual environment holding the installed wheel."""

    root: Path
    wheel: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    @property
    def bin(self) -> Path:
        return self.root / "bin"

    def site_packages(self) -> Path:
        out = subprocess.run([str(self.python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True)
        return Path(out.stdout.strip())


def wheel_sources(dockerfile: Path = REPO / "components" / "Dockerfile") -> list[str]:
    """What the image's wheel stage copies from the checkout (the sources of its COPY lines)."""
    import re

    first_stage = re.split(r"(?m)^FROM\s", dockerfile.read_text())[1]
    copies = [line.split()[1:-1] for line in first_stage.splitlines() if line.startswith("COPY ")]
    return [source for sources in copies for source in sources]


def build_wheel(out_dir: Path) -> Path:
    """The wheel the image builds: `pip wheel --no-deps .` over a copy of what its wheel stage copies.

    A copy, not the checkout itself: setuptools reuses the checkout's build/ folder, where a
    module deleted from the source would still sit and end up in the wheel.
    """
    import shutil
    import tempfile

    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        context = Path(tmp) / "context"
        context.mkdir()
        for source in wheel_sources():
            path = REPO / source
            if path.is_dir():
                shutil.copytree(path, context / source, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
            else:
                shutil.copy(path, context / source)
        subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                        "--wheel-dir", str(out_dir), str(context)], check=True, capture_output=True, text=True)
    (wheel,) = out_dir.glob("fusionrec-*.whl")
    return wheel


def make_wheel_env(root: Path, wheel: Path) -> WheelEnv:
    """A venv at root with the wheel installed and this environment's dependencies visible."""
    venv.create(root, with_pip=False, symlinks=True)
    env = WheelEnv(root, wheel)
    # the wheel first: with the dependencies visible, pip would see the checkout's editable install
    subprocess.run([sys.executable, "-m", "pip", "--python", str(env.python), "install", "--quiet",
                    "--no-deps", "--no-index", "--disable-pip-version-check", str(wheel)],
                   check=True, capture_output=True, text=True)
    deps = sysconfig.get_paths()["purelib"]
    (env.site_packages() / "_fusionrec_dependencies.pth").write_text(deps + "\n")
    return env


def image_env(dockerfile: Path = REPO / "components" / "Dockerfile") -> dict[str, str]:
    """The ENV of a Dockerfile's last stage ({name: value}): what every container of the image gets."""
    import re
    import shlex

    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    stages = re.split(r"(?m)^FROM\s", text)
    env: dict[str, str] = {}
    for line in stages[-1].splitlines():
        if line.strip().upper().startswith("ENV "):
            for pair in shlex.split(line.strip()[4:]):
                name, _, value = pair.partition("=")
                env[name] = value
    return env
