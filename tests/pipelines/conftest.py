"""The wheel environment (what a pod has), built once per session for the cluster-path tests."""

from __future__ import annotations

import pytest
from tests.wheel_env import WheelEnv, build_wheel, make_wheel_env


@pytest.fixture(scope="session")
def wheel_env(tmp_path_factory: pytest.TempPathFactory) -> WheelEnv:
    """A virtual environment with the fusionrec wheel installed and the locked dependencies visible."""
    root = tmp_path_factory.mktemp("wheel")
    return make_wheel_env(root / "venv", build_wheel(root / "dist"))
