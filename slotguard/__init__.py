"""slotguard: change-data-capture cache invalidation for booking slot caches."""

__version__ = "0.1.0"
