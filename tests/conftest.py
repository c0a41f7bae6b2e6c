"""Shared pytest configuration: the real-server fixtures (started lazily, once per session)."""

pytest_plugins = ["tests.support.servers"]
