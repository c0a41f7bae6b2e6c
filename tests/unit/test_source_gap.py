"""Finding a gap in the change stream: the relay's stored position, the slot, the control record, the doctor's
WAL-limit checks, and the key patterns a flush deletes by."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiokafka.structs import ConsumerRecord

from connectors.source_gap import SlotState, StoredPosition, find_gap, read_relay_position
from processor.core.keys import KeyTemplate
from processor.worker.source_watch import SourceWatch
from schemas.connections import KafkaConnection
from schemas.control import CONTROL_HEADER, SourceGap, format_lsn, parse_lsn
from slotguard.operate.doctor import _slot_limits
from slotguard.settings import DEFAULT_KEY_TEMPLATE

#: The relay's offsets file as Debezium 3.6's FileOffsetBackingStore wrote it (a Java-serialised HashMap).
OFFSETS = (
    b"\xac\xed\x00\x05sr\x00\x11java.util.HashMap\x05\x07\xda\xc1\xc3\x16`\xd1\x03\x00\x02F\x00\nloadFactorI"
    b"\x00\tthresholdxp?@\x00\x00\x00\x00\x00\x0cw\x08\x00\x00\x00\x10\x00\x00\x00\x01ur\x00\x02[B\xac\xf3\x17"
    b'\xf8\x06\x08T\xe0\x02\x00\x00xp\x00\x00\x00?["slotguard-appointments",{"server":"relay_experiment_c2a391"}]'
    b'uq\x00~\x00\x02\x00\x00\x00w{"lsn_proc":32612896,"messageType":"COMMIT","lsn_commit":32612896,'
    b'"lsn":32612896,"txId":760,"ts_usec":1796660411776034}x'
)


def _slot(**changes: Any) -> SlotState:
    base: dict[str, Any] = {
        "name": "slotguard",
        "active": False,
        "wal_status": "reserved",
        "restart_lsn": 100,
        "confirmed_flush_lsn": 200,
        "failover": True,
        "safe_wal_size": None,
    }
    return SlotState(**{**base, **changes})


def test_the_relays_offsets_file_yields_its_lsn_and_time_without_a_jvm(tmp_path: Path) -> None:
    path = tmp_path / "offsets.dat"
    path.write_bytes(OFFSETS)
    position = read_relay_position(path)
    assert position == StoredPosition(32612896, datetime(2026, 12, 7, 16, 20, 11, 776034, tzinfo=UTC))
    assert format_lsn(position.lsn) == "0/1F1A220"


def test_no_offsets_file_means_no_stored_position(tmp_path: Path) -> None:
    assert read_relay_position(tmp_path / "missing") is None


def test_a_half_handed_on_transaction_starts_the_gap_at_its_commit() -> None:
    position = StoredPosition.from_offset({"lsn": 500, "lsn_commit": 300, "lsn_proc": 500})
    assert position is not None
    assert position.lsn == 300
    assert StoredPosition.from_offset({"lsn": "x", "ts_usec": 1}) is None


@pytest.mark.parametrize(
    ("slot", "reason"),
    [
        (None, "is missing"),
        (_slot(wal_status="lost"), "was invalidated (wal_status lost)"),
        (
            _slot(restart_lsn=900, confirmed_flush_lsn=900),
            "starts after the stored position (it was recreated)",
        ),
    ],
)
def test_a_slot_that_cannot_serve_the_stored_position_is_a_gap(slot: SlotState | None, reason: str) -> None:
    gap = find_gap("slotguard", StoredPosition(250, None), slot)
    assert gap is not None
    assert gap.reason == reason
    assert "Recover with: slotguard source recover" in gap.describe()


def test_a_healthy_slot_or_a_first_start_is_no_gap() -> None:
    assert find_gap("slotguard", StoredPosition(250, None), _slot()) is None
    assert find_gap("slotguard", None, None) is None


def test_lsns_print_and_parse_as_postgres_writes_them() -> None:
    assert format_lsn((0x16 << 32) | 0xB374D848) == "16/B374D848"
    assert parse_lsn("16/B374D848") == (0x16 << 32) | 0xB374D848
    with pytest.raises(ValueError, match="not an LSN"):
        parse_lsn("12345")


def test_flush_patterns_escape_literals_and_keep_company_1_off_company_15() -> None:
    template = KeyTemplate(DEFAULT_KEY_TEMPLATE, ZoneInfo("UTC"))
    assert template.pattern() == "cal_slots_*_*_*_*_*"
    assert template.pattern("1") == "cal_slots_1_*_*_*_*"
    assert template.pattern("15", "") == "cal_slots_15__*_*_*"
    assert KeyTemplate("a*[{company}]{start}", ZoneInfo("UTC")).pattern("7") == "a\\*\\[7\\]*"


def _record(value: bytes, headers: list[tuple[str, bytes]], offset: int = 0) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("hb", 0, offset, 0, 0, None, value, None, len(value), -1, headers)


def _gap(state: str, at: int) -> bytes:
    return (
        SourceGap(
            state=state,
            slot="slotguard",
            reason="is missing",
            lost_from_lsn=32612896,
            recorded_at=datetime(2026, 12, 7, 12, at, tzinfo=UTC),
            resumed_at_lsn=40000000 if state == "recovered" else None,
            flushed_keys=12 if state == "recovered" else None,
            scope="every cached key",
        )
        .model_dump_json()
        .encode()
    )


def test_the_source_watch_keeps_the_latest_gap_and_counts_only_heartbeats_as_heartbeats() -> None:
    seen: list[str] = []
    watch = SourceWatch(
        kafka=KafkaConnection(bootstrap="x:9092"),
        topic="hb",
        stall_after=60,
        on_gap=lambda g: seen.append(g.state),
    )
    header = [(CONTROL_HEADER, b"source-gap")]
    assert watch.control(_record(b'{"ts_ms":1}', [])) is False
    assert watch.control(_record(_gap("detected", 1), header)) is True
    assert watch.gap_open
    assert watch.gap is not None
    assert "recover with: slotguard source recover" in watch.gap.describe()
    assert watch.control(_record(_gap("recovered", 2), header)) is True
    assert not watch.gap_open
    assert watch.control(_record(_gap("detected", 0), header)) is True  # older: ignored
    assert not watch.gap_open
    assert watch.control(_record(b"{not json", header)) is True  # malformed: logged, ignored
    assert watch.control(_record(b"{}", [(CONTROL_HEADER, b"from-the-future")])) is True
    assert seen == ["detected", "recovered"]


class _Settings:
    """The one query ``_slot_limits`` makes, answered."""

    def __init__(self, value: str) -> None:
        self.value = value

    def execute(self, *args: Any) -> _Settings:
        return self

    def fetchone(self) -> tuple[str]:
        return (self.value,)


def test_a_slot_near_max_slot_wal_keep_size_fails_and_no_limit_is_ok() -> None:
    near = _slot_limits(_Settings("1024"), _slot(safe_wal_size=100 << 20))  # type: ignore[arg-type]
    assert [(c.name, c.status) for c in near] == [
        ("max_slot_wal_keep_size", "warn"),
        ("slot headroom", "fail"),
    ]
    far = _slot_limits(_Settings("1024"), _slot(safe_wal_size=900 << 20))  # type: ignore[arg-type]
    assert far[1].status == "ok"
    assert [c.status for c in _slot_limits(_Settings("-1"), _slot())] == ["ok"]  # type: ignore[arg-type]
