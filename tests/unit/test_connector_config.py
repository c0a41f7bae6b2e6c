"""Connector settings: DSN parsing, the properties the relay and Kafka Connect share, appointments.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from pydantic import SecretStr

from connectors.config import (
    CONNECTOR_NAME,
    JSON_CONVERTER,
    SCHEMAS_ENABLE,
    PostgresTarget,
    change_topics,
    connector_properties,
    parse_database_url,
)
from connectors.errors import DatabaseUrlError
from connectors.relay import offsets_file, relay_properties
from connectors.render import (
    CONNECT_POSTGRES,
    REGENERATE_COMMAND,
    RENDERED_FILES,
    connect_config,
    render,
    strimzi_resource,
)
from schemas.errors import ConfigError
from slotguard.cli import main
from slotguard.settings import Settings, default_settings

SECRET = "s3cr:et@/pw"
DSN = "postgresql://booker:s3cr%3Aet%40%2Fpw@db.internal:6543/bookings?sslmode=require"


def _settings(**overrides: object) -> Settings:
    return Settings.model_construct(**overrides)  # type: ignore[arg-type]


def _rendered_config() -> dict[str, str]:
    config: dict[str, str] = json.loads(render(default_settings()))
    return config


# --- DSN parsing ------------------------------------------------------------------------------------


def test_dsn_parts_become_the_database_properties_with_the_password_decoded() -> None:
    target = parse_database_url(SecretStr(DSN))
    assert (target.hostname, target.port, target.user, target.dbname, target.sslmode) == (
        "db.internal",
        6543,
        "booker",
        "bookings",
        "require",
    )
    assert target.password.get_secret_value() == SECRET


def test_dsn_without_port_or_password_defaults_to_5432_and_an_empty_password() -> None:
    target = parse_database_url("postgres://app@localhost/app")
    assert (target.port, target.password.get_secret_value(), target.sslmode) == (5432, "", None)


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        (None, "not set"),
        ("mysql://u:p@h/db", "postgresql://"),
        ("postgresql://u:p@/db", "no host"),
        ("postgresql://h:5432/db", "no user"),
        ("postgresql://u:p@h:5432/", "no database"),
        ("postgresql://u:p@h:notaport/db", "invalid port"),
    ],
)
def test_unusable_dsn_is_a_config_error_naming_the_problem_not_the_password(
    url: str | None, problem: str
) -> None:
    with pytest.raises(DatabaseUrlError, match=problem) as info:
        parse_database_url(url)
    assert isinstance(info.value, ConfigError)
    assert "p@" not in str(info.value)


# --- shared properties ------------------------------------------------------------------------------


def test_relay_and_connect_share_every_common_property_except_where_to_connect() -> None:
    settings = default_settings()
    relay_target = PostgresTarget(
        hostname="127.0.0.1", port=5999, user="u", password=SecretStr("pw"), dbname="d"
    )
    common = connector_properties(settings, relay_target)
    relay = relay_properties(settings, relay_target)
    connect = _rendered_config()
    database_keys = {key for key in common if key.startswith("database.")}
    assert database_keys == {
        "database.hostname",
        "database.port",
        "database.user",
        "database.password",
        "database.dbname",
    }
    for key, value in common.items():
        assert relay[key] == value
        if key not in database_keys:
            assert connect[key] == value, key


def test_both_runtimes_use_json_converter_with_the_one_schemas_enable_switch() -> None:
    expected = "true" if SCHEMAS_ENABLE else "false"
    settings = default_settings()
    relay = relay_properties(settings, CONNECT_POSTGRES)
    for props in (relay, _rendered_config()):
        assert props["key.converter"] == props["value.converter"] == JSON_CONVERTER
        assert props["key.converter.schemas.enable"] == props["value.converter.schemas.enable"] == expected


def test_connector_captures_both_tables_via_a_filtered_publication_and_named_slot() -> None:
    settings = _settings(
        db_schema="booking",
        appointments_table="appts",
        services_table="svc",
        slot_name="slot_x",
        publication_name="pub_x",
        topic_prefix="pfx",
        heartbeat_interval_ms=1234,
    )
    props = connector_properties(settings, CONNECT_POSTGRES)
    assert props["table.include.list"] == "booking.appts,booking.svc"
    assert props["snapshot.include.collection.list"] == "booking.svc"
    assert (props["plugin.name"], props["publication.autocreate.mode"]) == ("pgoutput", "filtered")
    assert (props["slot.name"], props["publication.name"], props["topic.prefix"]) == (
        "slot_x",
        "pub_x",
        "pfx",
    )
    assert props["heartbeat.interval.ms"] == "1234"
    assert props["tombstones.on.delete"] == "true"
    assert change_topics(settings) == ["pfx.booking.appts", "pfx.booking.svc", "__debezium-heartbeat.pfx"]


def test_relay_adds_file_offsets_under_the_data_dir_per_slot(tmp_path: Path) -> None:
    settings = _settings(data_dir=tmp_path, slot_name="slot_y")
    props = relay_properties(settings, CONNECT_POSTGRES)
    assert props["name"] == CONNECTOR_NAME
    assert props["offset.storage"] == "org.apache.kafka.connect.storage.FileOffsetBackingStore"
    assert props["offset.storage.file.filename"] == str(tmp_path / "relay" / "slot_y" / "offsets.dat")
    assert offsets_file(settings).parent.name == "slot_y"
    assert "tasks.max" not in props


def test_relay_gets_the_real_password_from_the_dsn() -> None:
    settings = _settings(database_url=SecretStr(DSN))
    props = relay_properties(settings, parse_database_url(settings.database_url))
    assert props["database.password"] == SECRET
    assert props["database.sslmode"] == "require"


# --- the rendered files ------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["connect", "strimzi"])
def test_the_committed_rendered_file_is_up_to_date(fmt: str) -> None:
    path = RENDERED_FILES[fmt]  # type: ignore[index]
    committed = path.read_text(encoding="utf-8") if path.exists() else ""
    assert committed == render(default_settings(), fmt), f"{path} is out of date; run: {REGENERATE_COMMAND}"  # type: ignore[arg-type]


def test_rendered_connect_config_has_placeholders_and_no_secret_from_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("SLOTGUARD_DATABASE_URL", DSN)
    monkeypatch.setenv("SLOTGUARD_TOPIC_PREFIX", "from_env")
    text = render(default_settings())
    assert SECRET not in text
    assert "s3cr" not in text
    assert "from_env" not in text  # rendered from the defaults, not this machine's environment
    config = _rendered_config()
    assert config["database.password"] == "${env:POSTGRES_PASSWORD}"
    assert (config["database.hostname"], config["database.port"]) == (
        "${env:POSTGRES_HOST}",
        "${env:POSTGRES_PORT}",
    )


def test_connect_config_names_the_connector_and_adds_connect_only_properties() -> None:
    config = connect_config(default_settings())
    assert config["name"] == CONNECTOR_NAME
    assert config["tasks.max"] == "1"
    assert config["topic.creation.default.partitions"] == "1"
    assert "offset.storage" not in config


def test_strimzi_render_is_a_kafka_connector_resource_with_the_same_config() -> None:
    resource = yaml.safe_load(render(default_settings(), "strimzi"))
    assert resource == strimzi_resource(default_settings())
    assert (resource["apiVersion"], resource["kind"]) == ("kafka.strimzi.io/v1beta2", "KafkaConnector")
    assert resource["metadata"]["name"] == CONNECTOR_NAME
    assert resource["metadata"]["labels"]["strimzi.io/cluster"]
    spec = resource["spec"]
    assert spec["class"] == "io.debezium.connector.postgresql.PostgresConnector"
    assert spec["tasksMax"] == 1
    connect = _rendered_config()
    for key, value in spec["config"].items():
        assert connect[key] == value, key
    assert spec["config"]["database.password"] == "${env:POSTGRES_PASSWORD}"


def test_render_check_fails_on_a_stale_file_and_passes_after_rewriting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {"connect": tmp_path / "a.json", "strimzi": tmp_path / "a.yaml"}
    files["connect"].write_text("{}\n", encoding="utf-8")
    monkeypatch.setattr("connectors.render.RENDERED_FILES", files)
    monkeypatch.setattr("slotguard.commands.connector.RENDERED_FILES", files)
    assert main(["connector", "render", "--check"]) == 1
    assert REGENERATE_COMMAND in capsys.readouterr().err
    assert main(["connector", "render", "--write"]) == 0
    assert main(["connector", "render", "--check"]) == 0


def test_render_prints_the_environment_settings_but_never_the_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SLOTGUARD_DATABASE_URL", DSN)
    monkeypatch.setenv("SLOTGUARD_TOPIC_PREFIX", "from_env")
    for fmt in ("connect", "strimzi"):
        assert main(["connector", "render", "--format", fmt]) == 0
        out = capsys.readouterr().out
        assert "from_env" in out
        assert "s3cr" not in out
