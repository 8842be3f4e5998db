"""Serving fixtures live in tests/serving/serving_fixtures.py, registered for every suite by tests/conftest.py."""
