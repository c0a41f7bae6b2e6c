"""Debezium connector configuration and the embedded-engine relay into Kafka."""
