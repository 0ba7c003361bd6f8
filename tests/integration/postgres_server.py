"""A throwaway PostgreSQL server for tests: ``initdb`` into a temp dir, ``pg_ctl`` on 127.0.0.1.

Nothing of the machine's own PostgreSQL is used but its binaries (Debian's
``postgresql`` package puts them in ``/usr/lib/postgresql/<version>/bin``): no
system service, no cluster under ``/var/lib``. The server listens on a free
port of 127.0.0.1 and on a unix socket in its temp dir, password (SCRAM) login
over TCP, trust only on that socket. ``initdb`` refuses to run as root, so as
root the server runs as the ``postgres`` OS user the package creates. What it
shares with the MySQL one (the port, the OS user, the temp dir) is in ``db_server.py``.
"""

from __future__ import annotations

import glob
import shutil
import subprocess
from pathlib import Path

from tests.integration.db_server import (
    ServerUnavailable,
    make_base_dir,
    remove_base_dir,
    run,
    service_user,
    start_on_a_free_port,
)

INSTALL_HINT = ("the PostgreSQL server binaries (initdb, pg_ctl) are not installed; "
                "run `apt-get install postgresql` (Debian), which .ci/run does")


class PostgresUnavailable(ServerUnavailable):
    """The binaries or the OS user the server needs are missing (the message says what to install)."""


def find_bin_dir() -> Path | None:
    """The directory holding ``initdb`` and ``pg_ctl``: on PATH, or Debian's newest version."""
    on_path = shutil.which("initdb")
    if on_path and shutil.which("pg_ctl"):
        return Path(on_path).resolve().parent
    candidates = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")
                  if (Path(p).parent / "pg_ctl").exists()]

    def version(path: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in path.parent.name.split(".") if x.isdigit())

    return max(candidates, key=version) if candidates else None


class PostgresServer:
    """``start()`` a fresh cluster, ``sql(...)`` as its superuser, ``stop()`` and remove it (idempotent)."""

    superuser = "postgres"

    def __init__(self) -> None:
        self.bin_dir = find_bin_dir()
        if self.bin_dir is None:
            raise PostgresUnavailable(INSTALL_HINT)
        self.run_as = service_user("postgres", refuses_root="initdb", package="postgresql",
                                   unavailable=PostgresUnavailable)
        self.base: Path | None = None
        self.port = 0
        self.host = "127.0.0.1"
        self._started = False

    @property
    def data_dir(self) -> Path:
        assert self.base is not None
        return self.base / "data"

    @property
    def socket_dir(self) -> str:
        assert self.base is not None
        return str(self.base)

    @property
    def log_file(self) -> Path:
        assert self.base is not None
        return self.base / "server.log"

    def _run(self, program: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return run([str(self.bin_dir / program), *args], user=self.run_as, cwd=self.base, timeout=timeout,
                   log_file=self.log_file)

    def start(self) -> PostgresServer:
        self.base = make_base_dir("codeagent-pg-", self.run_as)
        self._run("initdb", "-D", str(self.data_dir), "-U", self.superuser, "-E", "UTF8", "--locale=C",
                  "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync")
        self.port = start_on_a_free_port(self._start_on, "PostgreSQL")
        self._started = True
        return self

    def _start_on(self, port: int) -> None:
        self.port = port
        options = " ".join([
            f"-c listen_addresses={self.host}", f"-c port={port}",
            f"-c unix_socket_directories={self.socket_dir}",
            "-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off",
            "-c max_connections=30", "-c shared_buffers=16MB",
        ])
        self._run("pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", "60",
                  "-o", options, "start")

    def stop(self) -> None:
        try:
            if self._started:
                self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "-t", "30", "stop",
                          timeout=60)
        finally:
            self._started = False
            remove_base_dir(self.base)
            self.base = None

    def superuser_connection(self, dbname: str = "postgres"):
        """A psycopg2 connection as the superuser, over the unix socket (trust), autocommit."""
        import psycopg2

        conn = psycopg2.connect(host=self.socket_dir, port=self.port, user=self.superuser, dbname=dbname)
        conn.autocommit = True
        return conn

    def sql(self, statement: str, *args, dbname: str = "postgres") -> None:
        conn = self.superuser_connection(dbname)
        try:
            with conn.cursor() as cursor:
                cursor.execute(statement, args or None)
        finally:
            conn.close()
