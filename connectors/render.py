"""Render ``connectors/appointments.json``: the production Kafka Connect registration of the connector.

It is built from slotguard's *default* settings (the names production uses) by the same
:func:`~connectors.config.connector_properties` the relay uses, plus what only Connect needs. Secrets are
Connect config-provider placeholders resolved by the Connect worker from its environment
(``config.providers=env`` with ``org.apache.kafka.common.config.provider.EnvVarConfigProvider``), so the
committed file holds no password. Regenerate after changing connector settings::

    .venv/bin/python -m connectors.render          # rewrite connectors/appointments.json
    .venv/bin/python -m connectors.render --check  # exit 1 if the committed file is out of date
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from pydantic import SecretStr

from connectors.config import CONNECTOR_NAME, TOPIC_PARTITIONS, PostgresTarget, connector_properties
from slotguard.settings import Settings

#: The committed file.
APPOINTMENTS_JSON = Path(__file__).with_name("appointments.json")

#: The command that rewrites it (named by the staleness test).
REGENERATE_COMMAND = ".venv/bin/python -m connectors.render"

#: docker-compose's Postgres service; credentials come from the Connect worker's environment.
COMPOSE_POSTGRES = PostgresTarget(
    hostname="postgres",
    port=5432,
    user="${env:POSTGRES_USER}",
    password=SecretStr("${env:POSTGRES_PASSWORD}"),
    dbname="${env:POSTGRES_DB}",
)


def production_settings() -> Settings:
    """slotguard's defaults, ignoring the environment, so the rendered file is the same on every machine."""
    return Settings.model_construct()


def connect_config(settings: Settings, target: PostgresTarget = COMPOSE_POSTGRES) -> dict[str, object]:
    """The body of ``POST /connectors``: the shared properties plus Connect's own."""
    config = connector_properties(settings, target)
    config.update(
        {
            "tasks.max": "1",  # the Postgres connector reads one slot with one task
            # Connect creates missing topics itself (as the relay does with its admin client).
            "topic.creation.default.partitions": str(TOPIC_PARTITIONS),
            "topic.creation.default.replication.factor": "-1",  # the broker's default
        }
    )
    return {"name": CONNECTOR_NAME, "config": config}


def render(settings: Settings | None = None) -> str:
    """The file's text: stable key order, two-space indent, trailing newline."""
    body = connect_config(settings or production_settings())
    return json.dumps(body, indent=2) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m connectors.render", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file is out of date")
    parser.add_argument("--output", type=Path, default=APPOINTMENTS_JSON, help="file to write/check")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.output.read_text(encoding="utf-8") if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is out of date; run: {REGENERATE_COMMAND}", file=sys.stderr)
            return 1
        return 0
    args.output.write_text(text, encoding="utf-8")
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
