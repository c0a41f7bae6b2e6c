"""Errors of the connector configuration and the embedded relay."""

from __future__ import annotations

from schemas.errors import ConfigError, DependencyError


class DatabaseUrlError(ConfigError):
    """``SLOTGUARD_DATABASE_URL`` is missing or not a DSN the connector can use."""


class RelayStartError(DependencyError):
    """The JVM, Debezium or the Kafka clients could not be started."""


class RelayStoppedError(DependencyError):
    """Debezium stopped on its own (lost the database, bad slot, ...) while the relay was running."""


class RelayDeliveryError(DependencyError):
    """Kafka did not acknowledge a batch; its offsets were not committed, so it is re-read on restart."""


class JavaNotFound(RelayStartError):
    """No JVM >= 17 was found for the embedded Debezium relay."""


class ConnectApiError(DependencyError):
    """Kafka Connect's REST API could not be reached or refused a request."""


class SourceStateError(DependencyError):
    """The connector's stored position or its replication slot is not as recovery needs it."""


class SourceGapError(DependencyError):
    """The change stream has a gap: the stored position is no longer available in the replication slot."""


class SourceUnreachable(DependencyError):
    """Postgres could not be reached to compare the stored position with the replication slot."""
