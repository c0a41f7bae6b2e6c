"""The local stack's configuration surface: dev.env, ports, backends, names, JVM discovery (no servers)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from connectors.errors import JavaNotFound
from connectors.java import find_java
from slotguard.cli import main
from slotguard.dev.parts import free_port, port_is_free
from slotguard.dev.stack import DevStack, StackInfo
from slotguard.settings import Settings, load_settings
from tests.support import backends
from tests.support.servers import _slug, with_database

INFO = StackInfo(
    database_url="postgresql://postgres@127.0.0.1:5555/slotguard",
    kafka_bootstrap="127.0.0.1:6666",
    redis_url="redis://127.0.0.1:7777/0",
    data_dir=Path("/tmp/sg"),
    web_port=8888,
)


def test_every_dev_env_variable_is_a_settings_field() -> None:
    fields = {f"SLOTGUARD_{name.upper()}" for name in Settings.model_fields}
    assert set(INFO.env()) <= fields


def test_dev_env_values_configure_settings_for_the_tansu_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in INFO.env().items():
        monkeypatch.setenv(key, value)
    settings = load_settings()
    assert settings.kafka_enable_idempotence is False
    assert settings.broker_rebalance_timeout == 3
    assert settings.web_port == 8888
    assert settings.kafka_bootstrap == "127.0.0.1:6666"


def test_the_dev_env_shown_in_the_stack_docs_names_exactly_what_dev_up_writes() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "stack.md").read_text(encoding="utf-8")
    shown = {
        line.split("=", 1)[0] for line in docs.splitlines() if line.startswith("SLOTGUARD_") and "=" in line
    }
    assert shown == set(INFO.env()), f"docs/stack.md's dev.env differs: {sorted(shown ^ set(INFO.env()))}"


def test_dev_env_file_is_sourceable_key_value_lines(tmp_path: Path) -> None:
    path = DevStack(tmp_path).write_env(INFO)
    lines = [line for line in path.read_text().splitlines() if not line.startswith("#")]
    assert dict(line.split("=", 1) for line in lines) == INFO.env()
    assert path == tmp_path.resolve() / "dev.env"


def test_a_free_port_is_bindable_and_a_listening_port_is_not() -> None:
    port = free_port()
    assert port_is_free(port)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        assert not port_is_free(sock.getsockname()[1])


def test_a_port_whose_server_just_stopped_is_free_again_despite_time_wait() -> None:
    """A restarted part keeps its port: connections left in TIME_WAIT do not make the port "taken"."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = server.accept()
        accepted.close()  # the server side closes first: its end goes to TIME_WAIT
        client.close()
    assert port_is_free(port)


def test_status_of_a_directory_without_a_stack_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["dev", "status", "--dir", str(tmp_path)]) == 1
    assert "no stack" in capsys.readouterr().err


def test_down_without_a_stack_stops_nothing(tmp_path: Path) -> None:
    assert DevStack(tmp_path).down() == []


def test_an_explicit_java_home_without_java_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(JavaNotFound) as info:
        find_java(tmp_path)
    assert "SLOTGUARD_JAVA_HOME" in str(info.value)
    assert "\n" not in str(info.value)


def test_only_some_server_variables_set_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(backends.ENV_DATABASE, "postgresql://x@h/db")
    monkeypatch.delenv(backends.ENV_KAFKA, raising=False)
    monkeypatch.delenv(backends.ENV_REDIS, raising=False)
    with pytest.raises(RuntimeError, match="set all three"):
        backends.choose_backend()


def test_all_server_variables_set_selects_the_external_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(backends.ENV_DATABASE, "postgresql://x@h/db")
    monkeypatch.setenv(backends.ENV_KAFKA, "h:9092")
    monkeypatch.setenv(backends.ENV_REDIS, "redis://h/0")
    assert backends.choose_backend() == "external"


def test_the_docker_backend_is_chosen_by_name(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (backends.ENV_DATABASE, backends.ENV_KAFKA, backends.ENV_REDIS):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(backends.ENV_BACKEND, "docker")
    assert backends.choose_backend() == "docker"


def test_names_are_slugged_to_lowercase_letters_digits_and_underscores() -> None:
    assert _slug("Test Foo[param-1]", 40) == "test_foo_param_1"
    assert len(_slug("x" * 100, 24)) == 24


def test_with_database_swaps_only_the_database() -> None:
    assert (
        with_database("postgresql://u:p@h:1/a?sslmode=disable", "b")
        == "postgresql://u:p@h:1/b?sslmode=disable"
    )
