"""Cache keys: the key template, and the guard that keeps tenant ids from breaking a key.

The template (``SLOTGUARD_KEY_TEMPLATE``) is a ``str.format`` template over ``company``, ``branch``,
``event_type``, ``start`` and ``end``; ``start``/``end`` are the bucket's bounds rendered in the key zone
with their ``strftime`` spec (default ``%Y-%m-%d-%H``), and a null branch renders empty. The template is
compiled once: tenant parts are substituted once per (company, branch, event type) and bucket times
rendered once per bucket, in bounded caches; when the tenant fields all come before the times (the default
template), a key is a cached tenant head plus a cached bucket tail.

Tenant ids must be integers (or fully match ``SLOTGUARD_TENANT_ID_PATTERN``), and even a configured
pattern cannot admit what could widen a Redis pattern or split a key: ``* ? [ ] \\``, whitespace, control
characters, or the template's separator characters (the punctuation next to a tenant field, ``_`` by
default). Violations raise :class:`UnsafeKeyPart`.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Final

from processor.core.errors import KeyTemplateError, UnsafeKeyPart

TENANT_FIELDS: Final = ("company", "branch", "event_type")
TIME_FIELDS: Final = ("start", "end")
DEFAULT_TIME_SPEC: Final = "%Y-%m-%d-%H"
_GLOB_AND_ESCAPE: Final = "*?[]\\"
#: The default tenant id: an integer that fits a 64-bit column (at most 19 digits) -- so a 10^30 "id" is
#: refused, not turned into a key.
_INTEGER: Final = re.compile(r"-?[0-9]{1,19}")
_CACHE_LIMIT: Final = 1 << 16
_HOUR: Final = timedelta(hours=1)


class KeyTemplate:
    """A compiled key template."""

    __slots__ = (
        "_head_cache",
        "_pieces",
        "_prefix_cache",
        "_split",
        "_tail_cache",
        "_time_cache",
        "_time_labels",
        "_zone",
        "separators",
        "source",
    )

    def __init__(self, template: str, zone: tzinfo) -> None:
        self.source = template
        self._zone = zone
        # Pieces: literal text (str) or a field name; times become positional {i} in the per-tenant format.
        pieces: list[tuple[str, str | None]] = []
        time_specs: list[tuple[str, str]] = []
        separators: set[str] = set()
        seen: set[str] = set()
        try:
            parsed = list(string.Formatter().parse(template))
        except ValueError as exc:
            raise KeyTemplateError(f"SLOTGUARD_KEY_TEMPLATE: {exc}") from None
        for literal, name, spec, conversion in parsed:
            if literal:
                pieces.append((literal, None))
            if name is None:
                continue
            if conversion:
                raise KeyTemplateError(f"SLOTGUARD_KEY_TEMPLATE: conversion !{conversion} not allowed")
            if name in TENANT_FIELDS:
                if spec:
                    raise KeyTemplateError(f"SLOTGUARD_KEY_TEMPLATE: {{{name}}} takes no format spec")
                pieces.append(("", name))
            elif name in TIME_FIELDS:
                time_specs.append((name, spec or DEFAULT_TIME_SPEC))
                pieces.append(("", f"#{len(time_specs) - 1}"))
            else:
                raise KeyTemplateError(
                    f"SLOTGUARD_KEY_TEMPLATE: unknown field {{{name}}}; use {', '.join(TENANT_FIELDS + TIME_FIELDS)}"
                )
            seen.add(name)
        for needed in ("company", "start"):
            if needed not in seen:
                raise KeyTemplateError(f"SLOTGUARD_KEY_TEMPLATE must contain {{{needed}}}")
        # Separator characters: punctuation of the literal text right next to a tenant field.
        for index, (_text, name) in enumerate(pieces):
            if name in TENANT_FIELDS:
                for neighbour in (index - 1, index + 1):
                    if 0 <= neighbour < len(pieces) and pieces[neighbour][1] is None:
                        lit = pieces[neighbour][0]
                        edge = lit[-1] if neighbour < index else lit[0]
                        if not edge.isalnum():
                            separators.add(edge)
        self.separators = frozenset(separators)
        self._pieces = pieces
        #: Per time field in the template: whether it is the bucket's start, and its strftime spec.
        self._time_labels = tuple((name == "start", spec) for name, spec in time_specs)
        self._time_cache: dict[int, tuple[str, ...]] = {}
        self._prefix_cache: dict[tuple[str, str, str], str] = {}
        # Most templates name the tenant before the times (the default does): then a key is a per-tenant
        # head plus a per-bucket tail, two cache hits and one concatenation -- no format() per key.
        first_time = next((i for i, (_t, n) in enumerate(pieces) if n is not None and n.startswith("#")), 0)
        tenant_after = any(n in TENANT_FIELDS for _t, n in pieces[first_time:])
        self._split: int | None = None if tenant_after else first_time
        self._head_cache: dict[tuple[str, str, str], str] = {}
        self._tail_cache: dict[int, str] = {}

    def _tenant_format(self, company: str, branch: str, event_type: str) -> str:
        key = (company, branch, event_type)
        fmt = self._prefix_cache.get(key)
        if fmt is None:
            values = {"company": company, "branch": branch, "event_type": event_type}
            out: list[str] = []
            for text, name in self._pieces:
                if name is None:
                    out.append(text.replace("{", "{{").replace("}", "}}"))
                elif name.startswith("#"):
                    out.append("{" + name[1:] + "}")
                else:
                    out.append(values[name].replace("{", "{{").replace("}", "}}"))
            fmt = "".join(out)
            if len(self._prefix_cache) >= _CACHE_LIMIT:
                self._prefix_cache.clear()
            self._prefix_cache[key] = fmt
        return fmt

    def _times(self, bucket: int) -> tuple[str, ...]:
        times = self._time_cache.get(bucket)
        if times is None:
            start = datetime.fromtimestamp(bucket, UTC)
            local_start, local_end = start.astimezone(self._zone), (start + _HOUR).astimezone(self._zone)
            times = tuple(
                [
                    (local_start if is_start else local_end).strftime(spec)
                    for is_start, spec in self._time_labels
                ]
            )
            if len(self._time_cache) >= _CACHE_LIMIT:
                self._time_cache.clear()
            self._time_cache[bucket] = times
        return times

    @property
    def splits(self) -> bool:
        """Whether every key is a per-tenant :meth:`head` plus a per-bucket :meth:`tail` (no tenant field
        after a time field): then a window's keys are its tenant's head before each of its tails."""
        return self._split is not None

    def head(self, company: str, branch: str | None, event_type: str | None) -> str:
        """The part of every key of this tenant before the first time field; "" when a tenant field
        follows a time field (then only :meth:`render` renders)."""
        if self._split is None:
            return ""
        return self._head(company, branch or "", event_type or "")

    def _head(self, company: str, branch: str, event_type: str) -> str:
        key = (company, branch, event_type)
        head = self._head_cache.get(key)
        if head is None:
            values = {"company": company, "branch": branch, "event_type": event_type}
            head = "".join(
                text if name is None else values[name] for text, name in self._pieces[: self._split]
            )
            if len(self._head_cache) >= _CACHE_LIMIT:
                self._head_cache.clear()
            self._head_cache[key] = head
        return head

    def tail(self, bucket: int) -> str:
        """The part of a key from the first time field on, for ``bucket`` (split templates only)."""
        tail = self._tail_cache.get(bucket)
        if tail is None:
            times = self._times(bucket)
            tail = "".join(
                text if name is None else times[int(name[1:])] for text, name in self._pieces[self._split :]
            )
            if len(self._tail_cache) >= _CACHE_LIMIT:
                self._tail_cache.clear()
            self._tail_cache[bucket] = tail
        return tail

    def pattern(self, company: str | None = None, branch: str | None = None) -> str:
        """A Redis glob (``SCAN MATCH``) for every key of the template, or of one company (and branch).

        Literal text is escaped; a field not given matches anything. Tenant ids must already be checked
        by :class:`TenantGuard`: none holds a glob character or a separator, so company ``1`` never
        matches company ``15``'s keys. A null branch is ``""``, as :meth:`render` writes it."""
        values = {"company": company, "branch": branch if company is not None else None}
        out: list[str] = []
        for text, name in self._pieces:
            if name is None:
                out.append(glob_escape(text))
            else:
                value = values.get(name)
                out.append("*" if value is None else glob_escape(value))
        return "".join(out)

    def render(
        self, company: str, branch: str | None, event_type: str | None, buckets: Iterable[int]
    ) -> list[str]:
        """Keys for one tenant/event type over ``buckets`` (bucket starts, epoch seconds).

        Parts must already be checked by :class:`TenantGuard`; ``None`` renders empty."""
        if self._split is not None:
            head = self._head(company, branch or "", event_type or "")
            tails = self._tail_cache
            return [head + (tails.get(b) or self.tail(b)) for b in buckets]
        fmt = self._tenant_format(company, branch or "", event_type or "")
        return [fmt.format(*self._times(b)) for b in buckets]


def glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis glob."""
    return "".join("\\" + c if c in _GLOB_AND_ESCAPE else c for c in text)


#: Longest tenant id (company, branch, event type) that may become part of a key.
DEFAULT_MAX_TENANT_ID_LENGTH = 64  # a UUID (36) fits; a 2,000-digit id does not


class TenantGuard:
    """Checks tenant ids before they go into a key."""

    __slots__ = ("_forbidden", "_max_length", "_ok", "_pattern")

    def __init__(
        self, pattern: str | None, separators: Iterable[str], max_length: int = DEFAULT_MAX_TENANT_ID_LENGTH
    ) -> None:
        self._pattern = re.compile(pattern) if pattern is not None else _INTEGER
        self._max_length = max_length
        self._forbidden = frozenset(_GLOB_AND_ESCAPE) | frozenset(separators)
        self._ok: set[str] = set()

    def check(self, field: str, value: str) -> str:
        """``value`` if it is safe in a key; raises :class:`UnsafeKeyPart` naming ``field`` otherwise."""
        if value in self._ok:
            return value
        if not value:
            raise UnsafeKeyPart(f"{field} is empty")
        if len(value) > self._max_length:
            # Checked first: a 2,000-digit id must not reach the regex or become a key.
            raise UnsafeKeyPart(
                f"{field} {value[:20]!r}... is {len(value)} characters, longer than "
                f"{self._max_length} (SLOTGUARD_MAX_TENANT_ID_LENGTH)"
            )
        for char in value:
            if char in self._forbidden or char.isspace() or not char.isprintable():
                raise UnsafeKeyPart(
                    f"{field} {value[:40]!r} contains {char!r}, which is not allowed in a cache key"
                )
        if self._pattern.fullmatch(value) is None:
            wanted = (
                "a 64-bit integer" if self._pattern is _INTEGER else f"a match of {self._pattern.pattern!r}"
            )
            raise UnsafeKeyPart(f"{field} {value[:40]!r} is not {wanted} (SLOTGUARD_TENANT_ID_PATTERN)")
        if len(self._ok) >= _CACHE_LIMIT:
            self._ok.clear()
        self._ok.add(value)
        return value
