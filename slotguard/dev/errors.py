"""Errors of the local stack. All are :class:`~schemas.errors.DependencyError`: a server did not come up."""

from __future__ import annotations

from schemas.errors import DependencyError


class DevStackError(DependencyError):
    """The local stack could not be started, stopped or inspected."""


class MissingServerBinary(DevStackError):
    """A server binary (Postgres, tansu, Redis) is not installed."""


class ServerStartError(DevStackError):
    """A server exited or did not answer before its deadline.

    ``str(err)`` stays one line for the CLI; :attr:`log_tail` holds the end of the server's log, and
    :meth:`detailed` joins both for places that can show several lines (pytest, ``dev up`` on a terminal).
    """

    def __init__(self, message: str, log_tail: str = "") -> None:
        super().__init__(message)
        self.log_tail = log_tail

    def detailed(self) -> str:
        if not self.log_tail:
            return str(self)
        return f"{self}\n--- log tail ---\n{self.log_tail}"


class ForeignProcessError(DevStackError):
    """A pid file names a process that slotguard did not start; it is left alone."""
