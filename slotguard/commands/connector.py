"""``slotguard connector render|register|status|restart``: the production connector on Kafka Connect.

``render`` prints the configuration from the current settings (``--defaults``: slotguard's defaults, what
the committed files hold); ``--write`` rewrites the committed files and ``--check`` fails when they are
stale. ``register`` creates or updates the connector through Connect's REST API (an idempotent PUT);
``status`` shows the connector's and each task's state (with a failed task's trace); ``restart`` restarts
failed tasks (``--all``: the connector and every task).
"""

from __future__ import annotations

import argparse
import sys

from connectors.config import CONNECTOR_NAME
from connectors.connect_api import ConnectClient
from connectors.render import REGENERATE_COMMAND, RENDERED_FILES, Format, connect_config, render
from schemas.errors import ConfigError
from slotguard.settings import Settings, default_settings, load_settings


def register(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    p = sub.add_parser("render", help="Print the Kafka Connect config or a Strimzi KafkaConnector resource.")
    p.add_argument("--format", choices=["connect", "strimzi"], default="connect")
    p.add_argument(
        "--defaults", action="store_true", help="Render slotguard's defaults, not the environment."
    )
    p.add_argument("--write", action="store_true", help="Rewrite the committed files under connectors/.")
    p.add_argument("--check", action="store_true", help="Exit 1 if a committed file is out of date.")
    p.set_defaults(func=run_render)

    url_help = "Kafka Connect REST URL (default: SLOTGUARD_CONNECT_URL)."
    for name, func, help_text in (
        ("register", run_register, "Create or update the connector (PUT /connectors/NAME/config)."),
        ("status", run_status, "Show the connector's and its tasks' states."),
        ("restart", run_restart, "Restart failed tasks (--all: the connector and every task)."),
    ):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--connect-url", default=None, help=url_help)
        p.add_argument("--name", default=CONNECTOR_NAME, help=f"Connector name (default: {CONNECTOR_NAME}).")
        if name == "restart":
            p.add_argument("--all", action="store_true", help="Restart the connector and all its tasks.")
        p.set_defaults(func=func)


def _settings(args: argparse.Namespace) -> Settings:
    return default_settings() if getattr(args, "defaults", False) else load_settings()


def run_render(args: argparse.Namespace) -> int:
    if args.write or args.check:
        stale = []
        for kind, path in RENDERED_FILES.items():
            text = render(default_settings(), kind)
            current = path.read_text(encoding="utf-8") if path.exists() else ""
            if current == text:
                continue
            if args.check:
                stale.append(str(path))
            else:
                path.write_text(text, encoding="utf-8")
                print(f"wrote {path}")
        if stale:
            print(f"out of date: {', '.join(stale)}; run: {REGENERATE_COMMAND}", file=sys.stderr)
            return 1
        return 0
    fmt: Format = args.format
    sys.stdout.write(render(_settings(args), fmt))
    return 0


def _client(args: argparse.Namespace) -> ConnectClient:
    url = args.connect_url or load_settings().connect_url
    if url is None:
        raise ConfigError("no Kafka Connect URL: set SLOTGUARD_CONNECT_URL or pass --connect-url")
    if not url.startswith(("http://", "https://")):
        raise ConfigError(f"--connect-url must start with http:// or https://, not {url.split(':')[0]!r}")
    return ConnectClient(url)


def run_register(args: argparse.Namespace) -> int:
    config = connect_config(load_settings())
    config["name"] = args.name
    created = _client(args).put_config(args.name, config)
    print(f"connector {args.name} {'created' if created else 'updated'}")
    return 0


def run_status(args: argparse.Namespace) -> int:
    status = _client(args).status(args.name)
    print(f"connector {status.name}: {status.state} on {status.worker_id or '?'}")
    for task in status.tasks:
        print(f"  task {task.id}: {task.state} on {task.worker_id or '?'}")
        if task.trace:
            first = task.trace.strip().splitlines()
            print("    " + "\n    ".join(first[:20]))
    healthy = status.state == "RUNNING" and all(t.state == "RUNNING" for t in status.tasks)
    return 0 if healthy else 1


def run_restart(args: argparse.Namespace) -> int:
    client = _client(args)
    if args.all:
        client.restart_connector(args.name)
        print(f"connector {args.name} restarted")
        return 0
    failed = client.status(args.name).failed_tasks
    if not failed:
        print(f"connector {args.name}: no failed task")
        return 0
    for task in failed:
        client.restart_task(args.name, task.id)
        print(f"task {task.id} restarted")
    return 0
