"""A small client of Kafka Connect's REST API: register (idempotent PUT), status, restart.

Every failure -- the server unreachable, a 4xx/5xx answer, a body that is not JSON -- becomes one
:class:`~connectors.errors.ConnectApiError` line naming the request and Connect's own ``message``; the
connector's configuration (which may hold resolved secrets on a misconfigured deploy) is never echoed.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from connectors.errors import ConnectApiError
from schemas.redact import redact_url

#: Seconds one request may take; Connect answers config and status requests in milliseconds.
TIMEOUT_S = 15.0


@dataclass(frozen=True, slots=True)
class TaskState:
    id: int
    state: str
    worker_id: str
    trace: str | None


@dataclass(frozen=True, slots=True)
class ConnectorStatus:
    name: str
    state: str
    worker_id: str
    tasks: tuple[TaskState, ...]

    @property
    def failed_tasks(self) -> tuple[TaskState, ...]:
        return tuple(t for t in self.tasks if t.state == "FAILED")


class ConnectClient:
    """Talks to one Kafka Connect cluster at ``url`` (e.g. ``http://connect:8083``)."""

    def __init__(self, url: str, *, timeout: float = TIMEOUT_S) -> None:
        self._url = url.rstrip("/")
        self._timeout = timeout

    def _request(self, method: str, path: str, body: object | None = None) -> tuple[int, Any]:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self._url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
        )
        where = f"{method} {redact_url(self._url)}{path}"
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                status = int(response.status)
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise ConnectApiError(f"{where} answered {exc.code}: {_message(exc.read())}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise ConnectApiError(f"{where} failed: cannot reach Kafka Connect ({reason})") from None
        if not raw:
            return status, None
        try:
            return status, json.loads(raw)
        except ValueError:
            raise ConnectApiError(f"{where} answered {status} with a body that is not JSON") from None

    def put_config(self, name: str, config: dict[str, str]) -> bool:
        """Create or update the connector; True when it was created (201), False when updated (200)."""
        status, _ = self._request("PUT", f"/connectors/{quote(name, safe='')}/config", config)
        return status == 201

    def status(self, name: str) -> ConnectorStatus:
        _, body = self._request("GET", f"/connectors/{quote(name, safe='')}/status")
        try:
            connector = body["connector"]
            tasks = tuple(
                TaskState(int(t["id"]), str(t["state"]), str(t.get("worker_id", "")), t.get("trace"))
                for t in body.get("tasks", [])
            )
            return ConnectorStatus(
                str(body["name"]), str(connector["state"]), str(connector.get("worker_id", "")), tasks
            )
        except (KeyError, TypeError, ValueError):
            raise ConnectApiError(f"GET /connectors/{name}/status: unexpected answer shape") from None

    def restart_task(self, name: str, task_id: int) -> None:
        self._request("POST", f"/connectors/{quote(name, safe='')}/tasks/{task_id}/restart")

    def restart_connector(self, name: str) -> None:
        self._request("POST", f"/connectors/{quote(name, safe='')}/restart")

    # Offsets (Kafka >= 3.6, KIP-875): read them any time; reset them only while the connector is STOPPED.

    def offsets(self, name: str) -> list[dict[str, Any]]:
        """The source offsets the connector stored: ``[{"partition": {...}, "offset": {...}}, ...]``."""
        _, body = self._request("GET", f"/connectors/{quote(name, safe='')}/offsets")
        try:
            return [dict(entry) for entry in body["offsets"]]
        except (KeyError, TypeError, ValueError):
            raise ConnectApiError(f"GET /connectors/{name}/offsets: unexpected answer shape") from None

    def stop(self, name: str) -> None:
        """Stop the connector and its tasks, keeping its configuration (state STOPPED)."""
        self._request("PUT", f"/connectors/{quote(name, safe='')}/stop")

    def reset_offsets(self, name: str) -> None:
        """Delete every stored offset of a STOPPED connector: it starts afresh on resume."""
        self._request("DELETE", f"/connectors/{quote(name, safe='')}/offsets")

    def resume(self, name: str) -> None:
        self._request("PUT", f"/connectors/{quote(name, safe='')}/resume")


def _message(raw: bytes) -> str:
    """Connect's error body is ``{"error_code": 409, "message": "..."}``; one line of it."""
    try:
        message = str(json.loads(raw).get("message", ""))
    except (ValueError, AttributeError):
        message = raw.decode("utf-8", "replace")
    return " ".join(message.split())[:500] or "no message"
