"""A synthetic, seeded workload of appointment changes in the mix of a booking business.

40 % creates, 20 % reschedules, 15 % cancellations by status, 15 % noise updates (notes, updated_at), 5 % soft
deletes, 5 % hard deletes; 50 companies × 3 branches × 20 services; envelopes of about 1 KB (Debezium's
JsonConverter layout with ``schemas.enable=false``, the notes column padded).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

COMPANIES = 50
BRANCHES = 3
SERVICES = 20
#: service id -> (company, event type); the worker learns these from the services topic.
SERVICE_MAP = {s: (1 + (s - 1) % COMPANIES, 100 + s) for s in range(1, SERVICES + 1)}
MIX = (("create", 40), ("reschedule", 20), ("cancel", 15), ("noise", 15), ("soft_delete", 5), ("delete", 5))
BASE = datetime(2031, 1, 6, 8, tzinfo=UTC)
_NOTES = "x" * 420  # pads an update envelope (two row images) to about 1 KB


def _iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class Change:
    key: bytes
    value: bytes
    kind: str


def _row(appointment: int, rnd: random.Random) -> dict[str, object]:
    service = rnd.randint(1, SERVICES)
    company, _ = SERVICE_MAP[service]
    starts = BASE + timedelta(hours=rnd.randint(0, 24 * 60))
    return {
        "id": appointment,
        "company_id": company,
        "branch_id": rnd.randint(1, BRANCHES),
        "service_id": service,
        "customer_id": rnd.randint(1, 10_000),
        "starts_at": _iso(starts),
        "ends_at": _iso(starts + timedelta(minutes=rnd.choice((30, 60, 90)))),
        "status": "scheduled",
        "notes": _NOTES,
        "deleted_at": None,
        "updated_at": _iso(BASE),
    }


def _envelope(op: str, before: object, after: object, lsn: int, ts_ms: int) -> bytes:
    return orjson.dumps(
        {
            "before": before,
            "after": after,
            "op": op,
            "ts_ms": ts_ms + 5,
            "source": {
                "version": "3.6.3.Final",
                "connector": "postgresql",
                "name": "slotguard",
                "ts_ms": ts_ms,
                "snapshot": "false",
                "db": "app",
                "schema": "public",
                "table": "appointments",
                "txId": lsn // 8,
                "lsn": lsn,
            },
            "transaction": None,
        }
    )


def changes(n: int, *, seed: int = 7, ts_ms: int = 1_790_000_000_000) -> Iterator[Change]:
    """``n`` changes in the mix; updates and deletes refer to appointments created earlier."""
    rnd = random.Random(seed)
    kinds = [k for k, weight in MIX for _ in range(weight)]
    live: dict[int, dict[str, object]] = {}
    ids: list[int] = []  # the keys of ``live``, for O(1) random choice and swap-removal
    where: dict[int, int] = {}  # id -> its index in ``ids``
    next_id = 1

    def forget(appointment: int) -> None:
        live.pop(appointment)
        i = where.pop(appointment)
        last = ids.pop()
        if last != appointment:
            ids[i] = last
            where[last] = i

    for i in range(n):
        kind = rnd.choice(kinds) if live else "create"
        lsn = 1_000_000 + 8 * i
        if kind == "create":
            row = _row(next_id, rnd)
            live[next_id] = row
            where[next_id] = len(ids)
            ids.append(next_id)
            next_id += 1
            yield Change(str(row["id"]).encode(), _envelope("c", None, row, lsn, ts_ms + i), kind)
            continue
        appointment = rnd.choice(ids)
        before = live[appointment]
        after = dict(before)
        if kind == "reschedule":
            moved = BASE + timedelta(hours=rnd.randint(0, 24 * 60))
            after.update(starts_at=_iso(moved), ends_at=_iso(moved + timedelta(hours=1)))
        elif kind == "cancel":
            after["status"] = "cancelled"
        elif kind == "noise":
            after["notes"] = _NOTES[:-1] + "y"
            after["updated_at"] = _iso(BASE + timedelta(seconds=i))
        elif kind == "soft_delete":
            after["deleted_at"] = _iso(BASE)
        if kind == "delete":
            forget(appointment)
            yield Change(str(appointment).encode(), _envelope("d", before, None, lsn, ts_ms + i), kind)
            continue
        if kind in ("cancel", "soft_delete"):
            forget(appointment)
        else:
            live[appointment] = after
        yield Change(str(appointment).encode(), _envelope("u", before, after, lsn, ts_ms + i), kind)


def services_changes() -> list[tuple[bytes, bytes]]:
    """The services topic's records (snapshot reads) for the workload's services."""
    out = []
    for service, (company, event_type) in SERVICE_MAP.items():
        after = {"id": service, "company_id": company, "branch_id": None, "name": f"s{service}",
                 "calcom_event_type_id": event_type, "duration_minutes": 60}  # fmt: skip
        value = orjson.dumps({"before": None, "after": after, "op": "r", "ts_ms": 0,
                              "source": {"ts_ms": 0, "db": "app", "schema": "public", "table": "services"}})  # fmt: skip
        out.append((str(service).encode(), value))
    return out
