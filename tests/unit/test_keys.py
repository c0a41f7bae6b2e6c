"""Key template, Redis prefix (Laravel layouts) and the tenant-id guard."""

from __future__ import annotations

import pytest

from processor.core.errors import UnsafeKeyPart
from processor.core.keys import TenantGuard
from processor.core.resolver import InMemoryResolver, ServiceInfo
from schemas.errors import ConfigError, InputError
from tests.support.changes import appointment, config, envelope, run


def test_null_branch_renders_empty() -> None:
    """branch_id null -> cal_slots_15__123_..."""
    outcome = run(envelope("c", after=appointment(branch_id=None)))
    assert outcome.keys[1] == "cal_slots_15__123_2025-10-15-14_2025-10-15-15"


def test_custom_template_with_its_own_time_format() -> None:
    """Any strftime spec and separators; start and end are rendered in the key zone."""
    cfg = config(
        key_template="slots:{company}:{branch}:{event_type}:{start:%Y%m%d%H%M}", key_timezone="Asia/Kolkata"
    )
    outcome = run(envelope("c", after=appointment()), cfg)
    # 14:00Z is 19:30 IST: local whole hours 18, 19, 20.
    assert outcome.keys == [
        "slots:15:1:123:202510151800",
        "slots:15:1:123:202510151900",
        "slots:15:1:123:202510152000",
    ]


#: Pieces of strftime specs: the directives rendered without strftime, others it must fall back for, and
#: literal text (a lone trailing "%" included).


@pytest.mark.parametrize(
    ("prefix", "key"),
    [
        (
            "laravel_database_laravel_cache:",
            "laravel_database_laravel_cache:cal_slots_15_1_123_2025-10-15-14_2025-10-15-15",
        ),
        (
            "laravel_database_laravel_cache_",
            "laravel_database_laravel_cache_cal_slots_15_1_123_2025-10-15-14_2025-10-15-15",
        ),
    ],
    ids=["laravel-10", "laravel-11"],
)
def test_redis_keys_carry_the_physical_prefix(prefix: str, key: str) -> None:
    """redis_keys = prefix + logical key, in the same order (Laravel <=10 with ':', >=11 without)."""
    outcome = run(envelope("c", after=appointment()), config(redis_key_prefix=prefix))
    assert outcome.redis_keys == [prefix + k for k in outcome.keys]
    assert key in outcome.redis_keys


@pytest.mark.parametrize(
    "template",
    [
        "cal_slots_{company}_{start:%H}_{weekday}",  # unknown field
        "cal_slots_{branch}_{start}",  # no company
        "cal_slots_{company}",  # no start
        "cal_slots_{company!r}_{start}",  # conversion
        "cal_slots_{company:>5}_{start}",  # spec on a tenant field
        "cal_slots_{company_{start}",  # unbalanced
    ],
)
def test_unusable_templates_are_config_errors(template: str) -> None:
    """A template the core cannot render safely fails when CoreConfig is built."""
    with pytest.raises(ConfigError, match="SLOTGUARD_KEY_TEMPLATE"):
        config(key_template=template)


@pytest.mark.parametrize(
    "company", ["1*", "1?", "[1]", "1 2", "1\n", "1\t", "1_2", "1\\2", "abc", "", "\x00"]
)
def test_unsafe_company_ids_are_rejected_by_default(company: str) -> None:
    """Only integers pass without a pattern; globs, whitespace, controls, '_' never do."""
    with pytest.raises(UnsafeKeyPart) as caught:
        run(envelope("c", after=appointment(company_id=company)))
    assert isinstance(caught.value, InputError)
    assert "company_id" in str(caught.value)


@pytest.mark.parametrize("company", ["a*", "a?b", "a[b]", "a b", "a_b", "a\u2028b"])
def test_unsafe_parts_are_rejected_even_with_a_permissive_pattern(company: str) -> None:
    """tenant_id_pattern '.*' still cannot admit pattern or separator characters."""
    with pytest.raises(UnsafeKeyPart):
        run(envelope("c", after=appointment(company_id=company)), config(tenant_id_pattern=".*"))


def test_pattern_admits_uuid_tenants() -> None:
    """With a UUID pattern, UUID company ids render into keys."""
    uuid = "3f2b8c1e-9a4d-4e5f-8b6a-1c2d3e4f5a6b"
    cfg = config(tenant_id_pattern=r"[0-9a-f-]{36}|[0-9]+")
    outcome = run(envelope("c", after=appointment(company_id=uuid)), cfg)
    assert outcome.keys[0].startswith(f"cal_slots_{uuid}_1_123_")


def test_pattern_must_match_fully() -> None:
    """A pattern that only matches a prefix does not admit the id."""
    with pytest.raises(UnsafeKeyPart):
        run(envelope("c", after=appointment(company_id="15x")), config(tenant_id_pattern=r"[0-9]+"))


def test_separator_of_a_custom_template_is_rejected() -> None:
    """With ':' separators, ':' in an id is rejected (and '_' is allowed by a pattern)."""
    cfg = config(key_template="s:{company}:{start}", tenant_id_pattern=r"[a-z0-9_:]+")
    assert run(envelope("c", after=appointment(company_id="a_b")), cfg).keys
    with pytest.raises(UnsafeKeyPart):
        run(envelope("c", after=appointment(company_id="a:b")), cfg)


def test_unsafe_branch_is_rejected() -> None:
    """The branch part is guarded like the company."""
    with pytest.raises(UnsafeKeyPart, match="branch_id"):
        run(envelope("c", after=appointment(branch_id="1*")))


def test_unsafe_event_type_from_the_resolver_is_rejected() -> None:
    """Event types come from the services table and are guarded too."""
    res = InMemoryResolver([ServiceInfo("7", "15", "12 3")])
    with pytest.raises(UnsafeKeyPart, match="event_type_id"):
        run(envelope("c", after=appointment()), res=res)


@pytest.mark.parametrize("value", ["1" * 2000, "1" + "0" * 30])
def test_an_overlong_tenant_id_is_an_unsafe_key_part_naming_the_limit(value: str) -> None:
    """A 2,000-digit id, or 10^30 with a 16-character cap, never becomes a key."""
    guard = TenantGuard(None, "_", max_length=16)
    with pytest.raises(UnsafeKeyPart, match="SLOTGUARD_MAX_TENANT_ID_LENGTH"):
        guard.check("company_id", value)
    assert guard.check("company_id", "1" * 16) == "1" * 16


def test_the_default_integer_ids_must_fit_a_64_bit_column() -> None:
    """10^30 is digits, but no bigint column holds it: refused with the default pattern."""
    guard = TenantGuard(None, "_")
    assert guard.check("company_id", "9" * 19) == "9" * 19
    with pytest.raises(UnsafeKeyPart, match="64-bit integer"):
        guard.check("company_id", "1" + "0" * 30)
