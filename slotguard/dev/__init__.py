"""The local stack: Postgres, a Kafka-protocol broker and Redis from pip packages, no Docker."""
