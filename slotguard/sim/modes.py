"""The simulation's modes: the same workload against four ways of keeping the cache honest."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from slotguard.settings import Settings


@dataclass(frozen=True)
class Mode:
    name: str
    summary: str
    worker: bool = True  # ttl-only runs without it: the seed's fallback
    leased: bool = False  # readers use the lease protocol
    env: Mapping[str, str] = field(default_factory=dict)  # worker settings on top of the stack's


MODES = ("ttl-only", "invalidate", "guarded", "lease")


def _shipped(settings: Settings, name: str) -> float:
    """The setting if it is on, else the shipped default: ``guarded`` always runs the race closers."""
    value = float(getattr(settings, name))
    default = Settings.model_fields[name].default
    return value if value > 0 else float(default)


def mode(name: str, settings: Settings) -> Mode:
    """The mode called ``name`` (one of :data:`MODES`)."""
    plain = {
        "SLOTGUARD_SECOND_DELETE_AFTER": "0",
        "SLOTGUARD_GUARD_WINDOW": "0",
    }
    if name == "ttl-only":
        return Mode(name, "no worker: cached answers live until their TTL", worker=False)
    if name == "invalidate":
        return Mode(name, "the worker deletes the keys once, nothing more", env=plain)
    if name == "guarded":
        second = _shipped(settings, "second_delete_after")
        marker = _shipped(settings, "guard_window")
        return Mode(
            name,
            f"delete + keyspace guard (window {marker:g} s) + second delete after {second:g} s",
            env={
                "SLOTGUARD_SECOND_DELETE_AFTER": f"{second:g}",
                "SLOTGUARD_GUARD_WINDOW": f"{marker:g}",
            },
        )
    if name == "lease":
        return Mode(
            name,
            "readers fill through leases; the worker's delete revokes them",
            leased=True,
            env={**plain, "SLOTGUARD_REVOKE_LEASES": "true"},
        )
    raise ValueError(f"unknown mode {name!r}; choose one of {', '.join(MODES)}")
