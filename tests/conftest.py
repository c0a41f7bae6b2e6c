"""Shared pytest configuration: the real-server fixtures come from slotguard's own plugin."""

pytest_plugins = ["slotguard.testing.pytest_plugin"]
