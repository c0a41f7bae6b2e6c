"""Dead letters that Kafka would refuse are cut to fit, saying what was cut; the rest go out unchanged."""

from __future__ import annotations

import hashlib

from processor.worker.dlq import (
    MAX_TRUNCATED_KEY,
    RECORD_OVERHEAD,
    SourceRecord,
    dead_letter_headers,
    fit_dead_letter,
)
from processor.worker.errors import CrashLoop, RecordFailed

LIMIT = 100_000


def _size(key: bytes | None, value: bytes | None, headers: list[tuple[str, bytes]]) -> int:
    return len(key or b"") + len(value or b"") + sum(len(k) + len(v) for k, v in headers) + RECORD_OVERHEAD


def _headers(value: bytes, own: list[tuple[str, bytes]] | None = None) -> list[tuple[str, bytes]]:
    record = SourceRecord("t", 0, 5, b"k", value, own or [])
    return dead_letter_headers(record, RecordFailed("ValueError", "bad"))


def test_a_dead_letter_that_fits_goes_out_unchanged() -> None:
    headers = _headers(b"v")
    assert fit_dead_letter(b"k", b"v", headers, LIMIT) == (b"k", b"v", headers)


def test_a_too_large_value_is_cut_with_its_size_and_sha256_in_headers() -> None:
    value = b"x" * (3 * LIMIT)
    key, cut, headers = fit_dead_letter(b"k", value, _headers(value), LIMIT)
    named = dict(headers)
    assert key == b"k"
    assert cut is not None
    assert value.startswith(cut)
    assert _size(key, cut, headers) <= LIMIT
    assert named["slotguard.truncated"] == b"value"
    assert named["slotguard.original-size"] == str(len(value)).encode()
    assert named["slotguard.original-sha256"] == hashlib.sha256(value).hexdigest().encode()
    assert named["slotguard.error.class"] == b"ValueError"


def test_huge_own_headers_and_key_are_cut_too() -> None:
    value = b"v" * 10
    own: list[tuple[str, bytes]] = [("trace", b"h" * (2 * LIMIT))]
    key, cut, headers = fit_dead_letter(b"k" * LIMIT, value, _headers(value, own), LIMIT)
    assert key == b"k" * MAX_TRUNCATED_KEY
    assert cut == value
    assert "trace" not in dict(headers)
    assert dict(headers)["slotguard.truncated"] == b"headers,key"
    assert _size(key, cut, headers) <= LIMIT


def test_a_crash_loop_dead_letter_says_how_often_the_worker_died() -> None:
    record = SourceRecord("t", 0, 5, b"k", b"v")
    named = dict(dead_letter_headers(record, CrashLoop(3)))
    assert named["slotguard.error"] == b"crashed the worker 3 times"
    assert named["slotguard.error.class"] == b"CrashLoop"
