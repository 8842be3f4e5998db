"""Serving fixtures (defined in serving_fixtures.py, shared with tests/test_inference.py)."""

from serving_fixtures import *  # noqa: F403
