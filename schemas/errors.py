"""slotguard's error categories.

Every error slotguard raises on purpose derives from :class:`SlotguardError`; client-library errors are
wrapped at the boundary into one of these, so callers (the CLI, the worker) decide what to do by category,
not by which library failed. Each subpackage defines its specific errors as subclasses of these.
"""

from __future__ import annotations


class SlotguardError(Exception):
    """Base of every error slotguard raises on purpose. ``str(err)`` is a one-line, user-facing message."""


class ConfigError(SlotguardError):
    """The configuration is invalid (bad setting, missing URL, unknown time zone)."""


class InputError(SlotguardError):
    """An input record cannot be processed: it is malformed or unsafe. Goes to the dead-letter topic."""


class DependencyError(SlotguardError):
    """A server slotguard depends on (Postgres, Kafka, Redis, the JVM) is unavailable or failed."""
