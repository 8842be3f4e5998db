"""Model tests run torch on one thread: the ops are tiny, and thread hand-offs cost more than they save."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    import torch

    torch.set_num_threads(1)
