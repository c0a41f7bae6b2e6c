"""Settings: built from SLOTGUARD_* on demand, validated with one-line errors, secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from schemas.errors import ConfigError
from schemas.redact import redact_url
from slotguard.settings import Settings, load_settings, settings_markdown_table

CONFIGURATION = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_settings_are_read_from_the_slotguard_prefixed_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLOTGUARD_KEY_TIMEZONE", "Europe/Berlin")
    monkeypatch.setenv("SLOTGUARD_WINDOW_HOURS_AFTER", "2")
    settings = load_settings()
    assert settings.key_timezone == "Europe/Berlin"
    assert settings.window_hours_after == 2


def test_status_sets_accept_a_comma_separated_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLOTGUARD_OCCUPYING_STATUSES", "Booked, held")
    assert load_settings().occupying_statuses == frozenset({"booked", "held"})


def test_a_status_in_both_sets_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="both occupying and non-occupying"):
        load_settings(occupying_statuses="booked,cancelled")


def test_an_unknown_time_zone_names_the_variable_on_one_line() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(key_timezone="Mars/Olympus")
    message = str(info.value)
    assert "SLOTGUARD_KEY_TIMEZONE" in message
    assert "\n" not in message


def test_a_bad_value_is_not_echoed_in_the_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLOTGUARD_WEB_PORT", "hunter2-secret")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert "hunter2-secret" not in str(info.value)


def test_passwords_never_appear_in_the_settings_repr() -> None:
    settings = load_settings(
        database_url="postgresql://app:s3cret@db:5432/app", redis_url="redis://:s3cret@cache:6379/0"
    )
    assert "s3cret" not in repr(settings)
    assert "s3cret" not in str(settings.model_dump())


def test_redact_url_masks_only_the_password() -> None:
    assert redact_url("postgresql://app:s3cret@db:5432/app") == "postgresql://app:***@db:5432/app"
    assert redact_url("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
    assert redact_url(None) == ""


def test_derived_topics_follow_debezium_naming() -> None:
    settings = Settings(topic_prefix="shop", db_schema="booking")
    assert settings.appointments_topic == "shop.booking.appointments"
    assert settings.services_topic == "shop.booking.services"


def test_the_configuration_table_matches_the_settings_model() -> None:
    text = CONFIGURATION.read_text(encoding="utf-8")
    start, end = "<!-- settings-table:start -->", "<!-- settings-table:end -->"
    assert start in text, "docs/configuration.md lacks the settings-table start marker"
    assert end in text, "docs/configuration.md lacks the settings-table end marker"
    current = text.split(start, 1)[1].split(end, 1)[0].strip()
    assert current == settings_markdown_table(), (
        "docs/configuration.md's table is out of date; regenerate it with "
        "`.venv/bin/python -m slotguard.settings docs/configuration.md`"
    )
