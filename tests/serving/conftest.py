"""Serving fixtures (defined in serving_fixtures.py, shared with tests/test_inference.py)."""

from serving_fixtures import (  # noqa: F401
    bentoml_home, engine, features_dir, model_copy, model_dir, token,
)
