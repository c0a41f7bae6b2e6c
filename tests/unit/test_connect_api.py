"""``slotguard connector register|status|restart`` against a small real HTTP server that plays Kafka Connect
(Connect itself cannot run here): the requests it records are checked, and every failure is one line."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from slotguard.cli import main
from slotguard.dev.parts import free_port

DSN = "postgresql://booker:pw-in-dsn@db.internal:5432/bookings"


class FakeConnect:
    """Records requests; answers from ``routes`` ((method, path) -> (status, body))."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str, Any]] = []
        self.routes: dict[tuple[str, str], tuple[int, Any]] = {}
        self.configs: dict[str, dict[str, str]] = {}
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length)) if length else None
                owner.requests.append((self.command, self.path, body))
                status, answer = owner.route(self.command, self.path, body)
                data = b"" if answer is None else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = _answer

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def route(self, method: str, path: str, body: Any) -> tuple[int, Any]:
        if (method, path) in self.routes:
            return self.routes[(method, path)]
        if method == "PUT" and path.endswith("/config"):
            name = path.split("/")[2]
            created = name not in self.configs
            self.configs[name] = body
            return (201 if created else 200), {"name": name, "config": body}
        return 404, {"error_code": 404, "message": f"Connector {path} not found"}


@pytest.fixture
def connect(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeConnect]:
    fake = FakeConnect()
    fake.thread.start()
    monkeypatch.setenv("SLOTGUARD_CONNECT_URL", fake.url)
    monkeypatch.setenv("SLOTGUARD_DATABASE_URL", DSN)
    yield fake
    fake.server.shutdown()


def test_register_puts_the_rendered_config_and_is_idempotent(
    connect: FakeConnect, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["connector", "register"]) == 0
    assert "created" in capsys.readouterr().out
    assert main(["connector", "register"]) == 0
    assert "updated" in capsys.readouterr().out
    assert [(m, p) for m, p, _ in connect.requests] == [
        ("PUT", "/connectors/slotguard-appointments/config"),
        ("PUT", "/connectors/slotguard-appointments/config"),
    ]
    sent = connect.requests[0][2]
    assert sent["name"] == "slotguard-appointments"
    assert sent["database.password"] == "${env:POSTGRES_PASSWORD}"
    assert "pw-in-dsn" not in json.dumps(sent)


def test_status_shows_task_states_and_the_trace_of_a_failed_task(
    connect: FakeConnect, capsys: pytest.CaptureFixture[str]
) -> None:
    connect.routes[("GET", "/connectors/slotguard-appointments/status")] = (
        200,
        {
            "name": "slotguard-appointments",
            "connector": {"state": "RUNNING", "worker_id": "w1:8083"},
            "tasks": [
                {"id": 0, "state": "FAILED", "worker_id": "w1:8083", "trace": "org.Boom: slot in use\n\tat x"}
            ],
        },
    )
    assert main(["connector", "status"]) == 1
    out = capsys.readouterr().out
    assert "task 0: FAILED" in out
    assert "org.Boom: slot in use" in out


def test_restart_restarts_only_failed_tasks(connect: FakeConnect, capsys: pytest.CaptureFixture[str]) -> None:
    connect.routes[("GET", "/connectors/slotguard-appointments/status")] = (
        200,
        {
            "name": "slotguard-appointments",
            "connector": {"state": "RUNNING"},
            "tasks": [{"id": 0, "state": "RUNNING"}, {"id": 1, "state": "FAILED", "trace": "x"}],
        },
    )
    connect.routes[("POST", "/connectors/slotguard-appointments/tasks/1/restart")] = (204, None)
    assert main(["connector", "restart"]) == 0
    assert ("POST", "/connectors/slotguard-appointments/tasks/1/restart", None) in connect.requests
    assert not any(p.endswith("/tasks/0/restart") for _, p, _ in connect.requests)


def test_a_4xx_answer_is_one_line_with_connects_message(
    connect: FakeConnect, capsys: pytest.CaptureFixture[str]
) -> None:
    connect.routes[("PUT", "/connectors/slotguard-appointments/config")] = (
        400,
        {"error_code": 400, "message": "Connector configuration is invalid and contains\n 1 error"},
    )
    assert main(["connector", "register"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "answered 400: Connector configuration is invalid and contains 1 error" in err


def test_an_unreachable_connect_is_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SLOTGUARD_DATABASE_URL", DSN)
    assert main(["connector", "status", "--connect-url", f"http://127.0.0.1:{free_port()}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "cannot reach Kafka Connect" in err
