"""The per-RQ-version environments of tests/versions, for the worker class's smoke test."""

from tests.versions.conftest import rq_env

__all__ = ["rq_env"]
