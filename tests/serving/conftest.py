"""Serving fixtures live in tests/serving/serving_fixtures.py, registered for every suite by tests/conftest.py.

Every server a test here starts carries servers.MARK in its environment; at the end of the session
none may still run (workers included), and any that does is killed and reported.
"""

from __future__ import annotations

import contextlib
import signal

import psutil
import pytest
from tests.serving.servers import leftovers


@pytest.fixture(scope="session", autouse=True)
def no_server_outlives_the_session():
    yield
    left = leftovers()
    for line in left:
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(int(line.split()[0])).send_signal(signal.SIGKILL)
    assert not left, "serving processes left running by the tests (now killed):\n" + "\n".join(left)
