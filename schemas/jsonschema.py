"""Generate the JSON Schemas in ``schemas/json/`` from the pydantic models.

Run ``python -m schemas.jsonschema`` after changing a model (``--check`` exits 1 when a file is stale;
the unit suite runs the same comparison). Output is deterministic: sorted keys, two-space indent.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from schemas.envelope import ChangeEnvelope, SchemaEnvelope
from schemas.events import (
    AppointmentBooked,
    AppointmentCancelled,
    AppointmentRescheduled,
    booking_event_adapter,
)

JSON_DIR = Path(__file__).with_name("json")
REGENERATE = "python -m schemas.jsonschema"

_MODELS: dict[str, type[BaseModel]] = {
    "appointment_booked.json": AppointmentBooked,
    "appointment_rescheduled.json": AppointmentRescheduled,
    "appointment_cancelled.json": AppointmentCancelled,
    "change_envelope.json": ChangeEnvelope,
    "change_envelope_with_schema.json": SchemaEnvelope,
}


def _dump(schema: dict[str, Any]) -> str:
    return orjson.dumps(schema, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"


def render_all() -> dict[str, str]:
    """File name -> JSON Schema text for every generated schema."""
    files = {
        name: _dump(model.model_json_schema(by_alias=True, mode="serialization"))
        for name, model in _MODELS.items()
    }
    union = booking_event_adapter.json_schema(by_alias=True, mode="serialization")
    union["title"] = "BookingEvent"
    files["booking_event.json"] = _dump(union)
    return files


def stale_files(directory: Path = JSON_DIR) -> list[str]:
    """Names of generated files that are missing or differ from what the models produce."""
    stale = []
    for name, text in render_all().items():
        path = directory / name
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            stale.append(name)
    return sorted(stale)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog=REGENERATE, description=__doc__.splitlines()[0] if __doc__ else None
    )
    parser.add_argument("--check", action="store_true", help="only report stale files (exit 1 if any)")
    args = parser.parse_args(argv)
    if args.check:
        stale = stale_files()
        for name in stale:
            print(f"stale: schemas/json/{name}", file=sys.stderr)
        return 1 if stale else 0
    JSON_DIR.mkdir(exist_ok=True)
    for name, text in render_all().items():
        (JSON_DIR / name).write_text(text, encoding="utf-8")
        print(f"wrote schemas/json/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
