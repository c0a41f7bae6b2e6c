"""The Faust worker: thin agents around the core, Redis invalidation, DLQ, metrics."""
