"""The worker: a Faust application around a batch consumer of the appointments topic, the batch handler
(the agent), Redis invalidation, the DLQ, metrics and the failure policy."""
