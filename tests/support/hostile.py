"""Hostile change records: what a buggy producer, a hand-written replay or a schema change can put on the
appointments topic. Every one must go to the dead-letter topic with a reason; none may stop the worker.

:func:`hostile_records` is seeded, so a failing run is repeated by its seed. Each class builds its bad
record from a valid change (:func:`valid_change`) so that only the one thing the class names is wrong.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from tests.support.changes import appointment, envelope

#: Past every parser's nesting limit (orjson stops at 1,024, msgspec at the interpreter's recursion limit).
DEEP = 100_000
#: A megabyte and a bit: larger than Kafka's default largest record once headers are added.
MEGABYTE = 1_100_000
#: The columns the core reads (the default column mapping).
READ_COLUMNS = ("id", "company_id", "branch_id", "service_id", "starts_at", "ends_at", "status", "deleted_at")


def valid_change(rng: random.Random, **row: Any) -> dict[str, Any]:
    """A booking of company 15 in 2025 (a valid change: it has keys) with ``row``'s columns changed."""
    day = rng.randrange(1, 28)
    hour = rng.randrange(0, 23)
    image = appointment(
        id=rng.randrange(1, 1 << 31),
        starts_at=f"2025-11-{day:02d}T{hour:02d}:00:00Z",
        ends_at=f"2025-11-{day:02d}T{hour + 1:02d}:00:00Z",
    )
    image.update(row)
    return envelope("c", None, image, lsn=rng.randrange(1, 1 << 40))


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def _splice(rng: random.Random, column: str, raw: bytes) -> bytes:
    """A valid change whose ``after.<column>`` is the raw JSON text ``raw`` (which orjson cannot write)."""
    marker = "\x00splice\x00"
    text = _dumps(valid_change(rng, **{column: marker}))
    return text.replace(_dumps(marker), raw, 1)


def _wrong_type(column: str) -> Callable[[random.Random], bytes]:
    bad: dict[str, list[Any]] = {
        "id": [{"n": 1}, [1], True, 1.5],
        "company_id": [{"nested": 1}, [15], True, 15.5],
        "branch_id": [{"b": 1}, [1, 2], False, 0.5],
        "service_id": [{"s": 7}, [], True, 7.25],
        "starts_at": [{"t": 1}, ["2025-10-15T14:00:00Z"], True, 1.5e300],
        "ends_at": [{"t": 1}, [1], False, -1.5e300],
        "status": [{"s": "x"}, ["scheduled"], 42, True],
        "deleted_at": [{"d": 1}, [None], True, "not a time"],
    }

    def make(rng: random.Random) -> bytes:
        return _dumps(valid_change(rng, **{column: rng.choice(bad[column])}))

    return make


def _deep_array(rng: random.Random) -> bytes:
    return _splice(rng, "company_id", b"[" * DEEP + b"]" * DEEP)


def _deep_object(rng: random.Random) -> bytes:
    return _splice(rng, "status", b'{"a":' * DEEP + b"1" + b"}" * DEEP)


def _deep_unread_column(rng: random.Random) -> bytes:
    # In a column the core never reads: a decoder that skips it must still not recurse past its limit.
    return _splice(rng, "notes", b"[" * DEEP + b"]" * DEEP)


def _deep_envelope(rng: random.Random) -> bytes:
    # The whole value nested: nothing of an envelope can be read before the limit.
    return b"[" * DEEP + _dumps(valid_change(rng)) + b"]" * DEEP


def _wide_column(rng: random.Random) -> bytes:
    return _dumps(valid_change(rng, service_id=list(range(200_000))))


def _megabyte_tenant(rng: random.Random) -> bytes:
    return _dumps(valid_change(rng, company_id="1" * MEGABYTE))


def _megabyte_time(rng: random.Random) -> bytes:
    return _dumps(valid_change(rng, starts_at="2" * MEGABYTE))


def _megabyte_status(rng: random.Random) -> bytes:
    return _dumps(valid_change(rng, status="x" * MEGABYTE))


def _megabyte_id(rng: random.Random) -> bytes:
    return _dumps(valid_change(rng, id="7" * MEGABYTE))


def _not_utf8(rng: random.Random) -> bytes:
    return _dumps(valid_change(rng, status="SCHED")).replace(b"SCHED", b"sch\xff\xfeed", 1)


def _lone_surrogate(rng: random.Random) -> bytes:
    return _splice(rng, "company_id", b'"1\\ud800"')


def _truncated(rng: random.Random) -> bytes:
    text = _dumps(valid_change(rng))
    return text[: rng.randrange(1, len(text) - 1)]


def _trailing_garbage(rng: random.Random) -> bytes:
    return _dumps(valid_change(rng)) + b" }{ trailing"


def _bom(rng: random.Random) -> bytes:
    return b"\xef\xbb\xbf" + _dumps(valid_change(rng))


def _nul_in_string(rng: random.Random) -> bytes:
    # A raw control character inside a JSON string: not JSON.
    return _dumps(valid_change(rng, status="sched")).replace(b"sched", b"sch\x00ed", 1)


def _huge_number(rng: random.Random) -> bytes:
    return _splice(rng, rng.choice(("id", "company_id", "branch_id", "service_id")), b"1" + b"0" * 40)


def _huge_negative(rng: random.Random) -> bytes:
    return _splice(rng, rng.choice(("company_id", "service_id")), b"-" + b"9" * 400)


def _huge_epoch(rng: random.Random) -> bytes:
    return _splice(rng, "starts_at", b"9" * 30)


def _non_finite(rng: random.Random) -> bytes:
    return _splice(rng, "company_id", rng.choice((b"NaN", b"Infinity", b"-Infinity", b"1e99999")))


def _glob_tenant(rng: random.Random) -> bytes:
    return _dumps(valid_change(rng, company_id=rng.choice(("15*", "1?", "[15]", "*"))))


def _unsafe_tenant(rng: random.Random) -> bytes:
    bad = rng.choice(("1 OR 1", "15\n", "15\r\n16", "../15", "15:16", "１５", "15\u200b", " "))
    column = rng.choice(("company_id", "branch_id"))  # (no branch, "", is a tenant of its own)
    return _dumps(valid_change(rng, **{column: bad}))


def _long_tenant(rng: random.Random) -> bytes:
    return _dumps(valid_change(rng, company_id="1" + "0" * rng.randrange(64, 4096)))


def _missing_images(rng: random.Random) -> bytes:
    change = valid_change(rng)
    op = rng.choice(("c", "u", "d"))
    return _dumps({**change, "op": op, "before": None, "after": None})


def _unknown_op(rng: random.Random) -> bytes:
    return _dumps({**valid_change(rng), "op": rng.choice(("z", "", "C", 5, None, ["c"], {"op": "c"}))})


def _duplicate_keys(rng: random.Random) -> bytes:
    # Two company ids in one image: a parser that keeps the first and one that keeps the last disagree.
    column = rng.choice(("id", "company_id", "branch_id", "service_id"))
    return _dumps(valid_change(rng)).replace(
        f'"{column}":'.encode(), f'"{column}":16,"{column}":'.encode(), 1
    )


def _not_an_object(rng: random.Random) -> bytes:
    return rng.choice((b"[]", b'"change"', b"42", b"true", b"[1,2,3]", b'[{"op":"c"}]'))


def _empty(rng: random.Random) -> bytes:
    return rng.choice((b"", b" ", b"\n"))


def _bad_time(rng: random.Random) -> bytes:
    bad = rng.choice(("not a time", "2025-13-45T99:00:00Z", "T14:00", "2025-10-15T14:00:00+99:00"))
    return _dumps(valid_change(rng, starts_at=bad))


def _bad_envelope_parts(rng: random.Random) -> bytes:
    change = valid_change(rng)
    part = rng.choice(("after", "before", "source"))
    change[part] = rng.choice(("x", 5, [1], True))
    if part == "before":
        change["op"] = "d"
    return _dumps(change)


def _bad_schema_payload(rng: random.Random) -> bytes:
    return _dumps({"schema": {"type": "struct"}, "payload": rng.choice(("x", 5, [1], {"op": 7}))})


#: class name -> builder. Classes that make large records are capped (:data:`CAPPED`).
CLASSES: dict[str, Callable[[random.Random], bytes]] = {
    "not_utf8": _not_utf8,
    "lone_surrogate": _lone_surrogate,
    "truncated_json": _truncated,
    "trailing_garbage": _trailing_garbage,
    "bom": _bom,
    "nul_in_string": _nul_in_string,
    "deep_array": _deep_array,
    "deep_object": _deep_object,
    "deep_envelope": _deep_envelope,
    "deep_unread_column": _deep_unread_column,
    "wide_column": _wide_column,
    "megabyte_tenant": _megabyte_tenant,
    "megabyte_time": _megabyte_time,
    "megabyte_status": _megabyte_status,
    "megabyte_id": _megabyte_id,
    "huge_number": _huge_number,
    "huge_negative": _huge_negative,
    "huge_epoch": _huge_epoch,
    "non_finite": _non_finite,
    "glob_tenant": _glob_tenant,
    "unsafe_tenant": _unsafe_tenant,
    "long_tenant": _long_tenant,
    "missing_images": _missing_images,
    "unknown_op": _unknown_op,
    "duplicate_keys": _duplicate_keys,
    "not_an_object": _not_an_object,
    "empty": _empty,
    "bad_time": _bad_time,
    "bad_envelope_parts": _bad_envelope_parts,
    "bad_schema_payload": _bad_schema_payload,
    **{f"wrong_type_{column}": _wrong_type(column) for column in READ_COLUMNS},
}
#: At most this many records of each large class in a flood (a megabyte each, or a deep one).
CAPPED = {
    "megabyte_tenant": 3,
    "megabyte_time": 3,
    "megabyte_status": 3,
    "megabyte_id": 3,
    "deep_unread_column": 20,
    "deep_array": 20,
    "deep_object": 20,
    "deep_envelope": 20,
    "wide_column": 10,
}


@dataclass(frozen=True, slots=True)
class Hostile:
    cls: str
    value: bytes


def hostile_records(seed: int, count: int) -> list[Hostile]:
    """``count`` hostile records, every class at least once, in a seeded random order."""
    rng = random.Random(seed)
    names = list(CLASSES)
    picked = list(names)
    used = dict.fromkeys(names, 1)
    open_classes = [n for n in names if n not in CAPPED]
    while len(picked) < count:
        name = rng.choice(names)
        if used[name] >= CAPPED.get(name, count):
            name = rng.choice(open_classes)
        used[name] += 1
        picked.append(name)
    rng.shuffle(picked)
    return [Hostile(name, CLASSES[name](rng)) for name in picked]
