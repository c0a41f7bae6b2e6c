"""The data-platform team's tools: doctor (is the source, Kafka and Redis set up right?), replay (reset
the worker group's offsets, re-feed dead letters) and topic management."""
