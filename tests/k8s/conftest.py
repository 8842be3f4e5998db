"""Fixtures of the k8s suite: every overlay rendered once per session."""

from __future__ import annotations

import pytest
import yaml
from k8s_manifests import OVERLAYS, Doc, render


@pytest.fixture(scope="session")
def rendered_text() -> dict[str, str]:
    """Rendered YAML of every overlay, keyed by overlay name."""
    assert OVERLAYS == ["dev", "prod"], f"expected overlays dev and prod, found {OVERLAYS}"
    return {name: render(name) for name in OVERLAYS}


@pytest.fixture(scope="session")
def rendered(rendered_text: dict[str, str]) -> dict[str, list[Doc]]:
    """Rendered objects of every overlay, keyed by overlay name."""
    return {name: [d for d in yaml.safe_load_all(text) if d] for name, text in rendered_text.items()}
