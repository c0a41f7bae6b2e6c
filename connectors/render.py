"""The production registration of the connector, rendered from the same settings as the relay.

Two shapes of the same properties: the body of Kafka Connect's ``PUT /connectors/<name>/config``
(``connectors/appointments.json``) and a Strimzi ``KafkaConnector`` custom resource
(``connectors/appointments-strimzi.yaml``). Both are built by the same
:func:`~connectors.config.connector_properties` the relay uses, plus what only Connect needs. Secrets are
config-provider placeholders (``${env:...}``) resolved by the Connect worker, so a rendered file never
holds a password. ``slotguard connector render`` prints them; the committed files are checked by a test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import SecretStr

from connectors.config import (
    CONNECTOR_NAME,
    TOPIC_PARTITIONS,
    ConnectorSettings,
    PostgresTarget,
    connector_properties,
)

Format = Literal["connect", "strimzi"]

#: The committed files, one per format.
RENDERED_FILES: dict[Format, Path] = {
    "connect": Path(__file__).with_name("appointments.json"),
    "strimzi": Path(__file__).with_name("appointments-strimzi.yaml"),
}

#: The command that rewrites them (named by the staleness test).
REGENERATE_COMMAND = "slotguard connector render --write"

#: The Postgres the Connect worker reaches; credentials come from the Connect worker's environment
#: (``config.providers=env``), never from the file.
CONNECT_POSTGRES = PostgresTarget(
    hostname="${env:POSTGRES_HOST}",
    port="${env:POSTGRES_PORT}",
    user="${env:POSTGRES_USER}",
    password=SecretStr("${env:POSTGRES_PASSWORD}"),
    dbname="${env:POSTGRES_DB}",
)

#: The Strimzi ``KafkaConnect`` cluster the resource belongs to (the ``strimzi.io/cluster`` label).
STRIMZI_CLUSTER = "slotguard-connect"


def connect_config(settings: ConnectorSettings, target: PostgresTarget = CONNECT_POSTGRES) -> dict[str, str]:
    """The connector's whole configuration as Kafka Connect takes it: shared properties plus Connect's own."""
    config = connector_properties(settings, target)
    config.update(
        {
            "name": CONNECTOR_NAME,
            "tasks.max": "1",  # the Postgres connector reads one slot with one task
            # Connect creates missing topics itself (as the relay does with its admin client).
            "topic.creation.default.partitions": str(TOPIC_PARTITIONS),
            "topic.creation.default.replication.factor": "-1",  # the broker's default
        }
    )
    return config


def strimzi_resource(
    settings: ConnectorSettings, target: PostgresTarget = CONNECT_POSTGRES
) -> dict[str, object]:
    """A ``KafkaConnector`` custom resource (kafka.strimzi.io/v1beta2) with the same configuration."""
    config = connect_config(settings, target)
    config.pop("name")
    connector_class = config.pop("connector.class")
    tasks_max = int(config.pop("tasks.max"))
    return {
        "apiVersion": "kafka.strimzi.io/v1beta2",
        "kind": "KafkaConnector",
        "metadata": {"name": CONNECTOR_NAME, "labels": {"strimzi.io/cluster": STRIMZI_CLUSTER}},
        "spec": {"class": connector_class, "tasksMax": tasks_max, "config": config},
    }


def render(settings: ConnectorSettings, fmt: Format = "connect") -> str:
    """The text of one format: stable key order, trailing newline."""
    if fmt == "connect":
        return json.dumps(connect_config(settings), indent=2) + "\n"
    return yaml.safe_dump(strimzi_resource(settings), sort_keys=False, default_flow_style=False)
