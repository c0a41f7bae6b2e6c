"""Which booking event, if any, a row change is. Pure; never raises on a validated envelope.

A row *occupies* a slot when it has a start, is not soft-deleted (``deleted_at`` null) and its status is
not non-occupying. Statuses are matched case-insensitively against ``SLOTGUARD_OCCUPYING_STATUSES`` and
``SLOTGUARD_NON_OCCUPYING_STATUSES``; a status in neither set is treated as **occupying**, with a warning:
for a slot cache, invalidating too much only costs a cache miss, while invalidating too little offers a
taken slot again (a double booking). A null status counts as occupying without a warning (tables without
a status column).

==============================  ===========================================  ===========
change                          condition                                    result
==============================  ===========================================  ===========
``c``                           new row occupies                             booked
``u``                           before does not occupy, after occupies       booked
``u``                           both occupy, start/end/company/branch/       rescheduled
                                service changed
``u``                           before occupies, after does not              cancelled
``u`` without a before image    (REPLICA IDENTITY DEFAULT)                   touched: keys of the new
                                                                             window, warning
``d``                           old row occupied                             cancelled
anything else, ``r``/``t``/``m``                                             nothing
==============================  ===========================================  ===========
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Final, Literal

import msgspec

from schemas.rows import AppointmentRow

#: Fields whose change moves an occupied slot.
PLACEMENT_FIELDS: Final = ("starts_at", "ends_at", "company_id", "branch_id", "service_id")

CancelReason = Literal["status", "soft_delete", "delete", "unscheduled"]

REPLICA_IDENTITY_FIX: Final = "ALTER TABLE {table} REPLICA IDENTITY FULL"


class Kind(StrEnum):
    BOOKED = "booked"
    RESCHEDULED = "rescheduled"
    CANCELLED = "cancelled"
    #: An update without a before image: the new window is invalidated, no event is derived.
    TOUCHED = "touched"
    NOTHING = "nothing"


@dataclass(frozen=True, slots=True)
class StatusPolicy:
    occupying: frozenset[str]
    non_occupying: frozenset[str]

    @classmethod
    def of(cls, occupying: frozenset[str], non_occupying: frozenset[str]) -> StatusPolicy:
        return cls(frozenset(s.lower() for s in occupying), frozenset(s.lower() for s in non_occupying))

    def occupies(self, row: AppointmentRow, warnings: list[str]) -> bool:
        if row.starts_at is None or row.deleted_at is not None:
            return False
        status = row.status
        if status is None or status in self.occupying:
            return True
        if status in self.non_occupying:
            return False
        warnings.append(
            f"unknown status {status!r} treated as occupying; add it to SLOTGUARD_OCCUPYING_STATUSES "
            "or SLOTGUARD_NON_OCCUPYING_STATUSES"
        )
        return True


class Classification(msgspec.Struct, frozen=True, gc=False):
    kind: Kind
    before: AppointmentRow | None = None
    after: AppointmentRow | None = None
    #: For cancellations: status, soft_delete, delete or unscheduled.
    reason: CancelReason | None = None
    #: For reschedules: the placement fields that changed.
    changed: tuple[str, ...] = ()
    warnings: tuple[str, ...] = ()


def _nothing(warnings: list[str]) -> Classification:
    return Classification(Kind.NOTHING, warnings=tuple(warnings))


def _cancel_reason(before: AppointmentRow, after: AppointmentRow) -> CancelReason:
    if after.deleted_at is not None and before.deleted_at is None:
        return "soft_delete"
    if after.starts_at is None:
        return "unscheduled"
    return "status"


def classify(
    op: str,
    before: AppointmentRow | None,
    after: AppointmentRow | None,
    policy: StatusPolicy,
    table: str = "appointments",
) -> Classification:
    """Classify one appointment change (``op`` is Debezium's; images already decoded and TOAST-merged)."""
    warnings: list[str] = []
    if op == "c":
        if after is None:
            return _nothing(["create without an after image; ignored"])
        if after.id is not None and policy.occupies(after, warnings):
            return Classification(Kind.BOOKED, after=after, warnings=tuple(warnings))
        return _nothing(warnings)
    if op == "u":
        if after is None:
            return _nothing(["update without an after image; ignored"])
        if before is None:
            warnings.append(
                "update without a before image (REPLICA IDENTITY DEFAULT): only the new window is "
                f"invalidated and no event is derived; fix: {REPLICA_IDENTITY_FIX.format(table=table)}"
            )
            return Classification(Kind.TOUCHED, after=after, warnings=tuple(warnings))
        if after.id is None:
            return _nothing(["update of a row without an id; ignored"])
        was = policy.occupies(before, warnings)
        now = policy.occupies(after, warnings)
        if was and now:
            changed = tuple(f for f in PLACEMENT_FIELDS if getattr(before, f) != getattr(after, f))
            if changed:
                return Classification(
                    Kind.RESCHEDULED, before, after, changed=changed, warnings=tuple(warnings)
                )
            return _nothing(warnings)
        if now:
            return Classification(Kind.BOOKED, before, after, warnings=tuple(warnings))
        if was:
            reason = _cancel_reason(before, after)
            return Classification(Kind.CANCELLED, before, after, reason=reason, warnings=tuple(warnings))
        return _nothing(warnings)
    if op == "d":
        if before is None or before.starts_at is None or before.id is None:
            return _nothing(
                [
                    "delete without a full before image (REPLICA IDENTITY DEFAULT): the freed window is "
                    f"unknown and not invalidated; fix: {REPLICA_IDENTITY_FIX.format(table=table)}"
                ]
            )
        if policy.occupies(before, warnings):
            return Classification(Kind.CANCELLED, before=before, reason="delete", warnings=tuple(warnings))
        return _nothing(warnings)
    # r (snapshot read), t (truncate), m (message): no change to any slot.
    return _nothing(warnings)
