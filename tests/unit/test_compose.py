"""docker-compose.yml cannot run here (no Docker); these checks keep it consistent with the code."""

from __future__ import annotations

import json
import posixpath
from pathlib import Path
from typing import Any

import pytest
import yaml

from slotguard.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
CONNECTOR = "connectors/appointments.json"


@pytest.fixture(scope="module")
def services() -> dict[str, dict[str, Any]]:
    document = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    assert isinstance(document, dict)
    found = document["services"]
    assert isinstance(found, dict)
    return found


def _environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # the "KEY=value" list form
        return dict(item.split("=", 1) for item in env)
    return {str(key): str(value) for key, value in env.items()}


def _mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path -> host path (relative to the compose file) of each bind mount."""
    mounts: dict[str, str] = {}
    for volume in service.get("volumes", []):
        host, container = str(volume).split(":")[:2]
        if host.startswith((".", "/")):
            mounts[container] = posixpath.normpath(host)
    return mounts


def test_the_compose_file_has_the_whole_pipeline(services: dict[str, dict[str, Any]]) -> None:
    assert {"postgres", "kafka", "connect", "register-connector", "redis", "worker"} <= set(services)


def test_every_slotguard_variable_set_is_a_settings_field(services: dict[str, dict[str, Any]]) -> None:
    fields = {f"SLOTGUARD_{name.upper()}" for name in Settings.model_fields}
    for name, service in services.items():
        unknown = {key for key in _environment(service) if key.startswith("SLOTGUARD_")} - fields
        assert not unknown, f"service {name} sets unknown settings {sorted(unknown)}"


def test_postgres_runs_with_logical_wal_and_the_reference_schema(services: dict[str, dict[str, Any]]) -> None:
    postgres = services["postgres"]
    assert str(postgres["image"]).startswith("postgres:")
    assert "wal_level=logical" in str(postgres["command"])
    assert _mounts(postgres)["/docker-entrypoint-initdb.d"] == "schemas/sql"
    assert sorted((ROOT / "schemas" / "sql").glob("*.sql")), "schemas/sql holds no SQL"


def test_kafka_runs_in_kraft_mode(services: dict[str, dict[str, Any]]) -> None:
    kafka = services["kafka"]
    assert str(kafka["image"]).startswith("apache/kafka:")
    assert "controller" in _environment(kafka)["KAFKA_PROCESS_ROLES"]


def test_connect_is_debezium_3(services: dict[str, dict[str, Any]]) -> None:
    assert str(services["connect"]["image"]).startswith("quay.io/debezium/connect:3.")


def test_the_one_shot_registers_the_connector_file(services: dict[str, dict[str, Any]]) -> None:
    register = services["register-connector"]
    assert str(register["image"]).startswith("curlimages/curl")
    mounts = {container: host for container, host in _mounts(register).items() if host == CONNECTOR}
    assert mounts, f"register-connector does not mount {CONNECTOR}"
    command = " ".join(register["command"]) if isinstance(register["command"], list) else register["command"]
    assert any(f"@{container}" in command for container in mounts), "the mounted file is not the one sent"
    assert "-X PUT" in command
    assert "http://connect:8083/connectors/slotguard-appointments/config" in command


def test_the_registered_connector_matches_the_services_and_the_worker(
    services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = ROOT / CONNECTOR
    config = json.loads(path.read_text(encoding="utf-8"))
    assert config["name"] == "slotguard-appointments"
    for key, value in _worker_env(services).items():
        monkeypatch.setenv(key, value)
    worker = load_settings()  # also proves the worker's environment is valid configuration
    assert config["topic.prefix"] == worker.topic_prefix
    # The connector reads credentials through Connect's env config provider; the container must have them.
    connect_env = _environment(services["connect"])
    assert connect_env.get("CONNECT_CONFIG_PROVIDERS") == "env"
    for placeholder in (
        "POSTGRES_HOST",
        "POSTGRES_PORT",
        "POSTGRES_USER",
        "POSTGRES_PASSWORD",
        "POSTGRES_DB",
    ):
        assert f"${{env:{placeholder}}}" in json.dumps(config)
        assert placeholder in connect_env
    assert connect_env["POSTGRES_HOST"] in services


def _worker_env(services: dict[str, dict[str, Any]]) -> dict[str, str]:
    return {k: v for k, v in _environment(services["worker"]).items() if k.startswith("SLOTGUARD_")}


def test_the_worker_is_built_here_and_runs_the_worker_command(services: dict[str, dict[str, Any]]) -> None:
    assert services["worker"]["build"] == "."
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    assert "pip install" in dockerfile
    assert 'CMD ["slotguard", "worker"]' in dockerfile
    env = _worker_env(services)
    assert {"SLOTGUARD_KAFKA_BOOTSTRAP", "SLOTGUARD_REDIS_URL", "SLOTGUARD_DATABASE_URL"} <= set(env)
