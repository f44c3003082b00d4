"""Service tests run tiny networks: one torch thread each, and a depot per test module."""

from __future__ import annotations

from tests._torch_fixtures import _one_thread, depot

__all__ = ["_one_thread", "depot"]
