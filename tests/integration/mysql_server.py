"""A throwaway MariaDB server for tests: ``mariadb-install-db`` into a temp dir, ``mariadbd`` on 127.0.0.1.

Nothing of the machine's own MariaDB is used but its binaries (Debian's
``mariadb-server``): no system service, no ``/etc/mysql`` configuration
(``--no-defaults``), no data under ``/var/lib/mysql``. The server listens on a
free port of 127.0.0.1 and on a unix socket in its temp dir, with real accounts
(no ``--skip-grant-tables``): ``root`` without a password, reachable only on that
socket, for the fixtures; the users the tests create log in with a password over
TCP. No binary log, so any user may create stored functions. ``mariadbd`` refuses
to run as root, so as root the server runs as the ``mysql`` OS user the package
creates. The port, the OS user and the temp dir are handled as for the PostgreSQL
server (``db_server.py``).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

from tests.integration.db_server import (
    ServerUnavailable,
    as_user,
    log_tail,
    make_base_dir,
    remove_base_dir,
    run,
    service_user,
    start_on_a_free_port,
)

INSTALL_HINT = ("the MariaDB server binaries (mariadbd, mariadb-install-db, mariadb-admin) are not installed; "
                "run `apt-get install mariadb-server` (Debian), which .ci/run does")


class MySQLUnavailable(ServerUnavailable):
    """The binaries or the OS user the server needs are missing (the message says what to install)."""


def find_program(*names: str) -> str | None:
    """The first of ``names`` on PATH or in /usr/sbin (not on a non-root PATH, where Debian puts mariadbd)."""
    for name in names:
        found = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/local/sbin")
        if found:
            return found
    return None


class MariaDBServer:
    """``start()`` a fresh server, ``sql(...)`` as its root, ``stop()`` and remove it (idempotent)."""

    def __init__(self) -> None:
        self.server_bin = find_program("mariadbd", "mysqld")
        self.install_db = find_program("mariadb-install-db", "mysql_install_db")
        self.admin = find_program("mariadb-admin", "mysqladmin")
        if not (self.server_bin and self.install_db and self.admin):
            raise MySQLUnavailable(INSTALL_HINT)
        self.run_as = service_user("mysql", refuses_root="mariadbd", package="mariadb-server",
                                   unavailable=MySQLUnavailable)
        self.base: Path | None = None
        self.port = 0
        self.host = "127.0.0.1"
        self._process: subprocess.Popen | None = None

    @property
    def data_dir(self) -> Path:
        assert self.base is not None
        return self.base / "data"

    @property
    def socket(self) -> str:
        assert self.base is not None
        return str(self.base / "mysqld.sock")

    @property
    def log_file(self) -> Path:
        assert self.base is not None
        return self.base / "server.log"

    def _options(self) -> list[str]:
        """Server options for mariadb-install-db and mariadbd alike: small, fast, nothing durable."""
        return ["--no-defaults", f"--datadir={self.data_dir}", "--skip-log-bin", "--skip-name-resolve",
                "--innodb-buffer-pool-size=16M", "--innodb-log-file-size=8M", "--innodb-doublewrite=0",
                "--innodb-flush-log-at-trx-commit=0", "--innodb-flush-method=nosync",
                "--performance-schema=OFF", "--character-set-server=utf8mb4"]

    def start(self) -> MariaDBServer:
        self.base = make_base_dir("codeagent-mysql-", self.run_as)
        run([self.install_db, *self._options(), "--auth-root-authentication-method=normal", "--skip-test-db"],
            user=self.run_as, cwd=self.base, timeout=180)
        self.port = start_on_a_free_port(self._start_on, "MariaDB")
        # mariadb-install-db also makes root@127.0.0.1, @::1 and @<hostname>, all without a password.
        conn = self.root_connection()
        try:
            cursor = conn.cursor()
            cursor.execute("SELECT user, host FROM mysql.user WHERE user = 'root' AND host <> 'localhost'")
            for user, host in cursor.fetchall():
                cursor.execute("DROP USER %s@%s", (user, host))
        finally:
            conn.close()
        return self

    def _start_on(self, port: int) -> None:
        self.port = port
        command = [self.server_bin, *self._options(), f"--socket={self.socket}", f"--port={port}",
                   f"--bind-address={self.host}", f"--pid-file={self.base / 'mysqld.pid'}",
                   f"--tmpdir={self.base}", f"--log-error={self.log_file}", "--max-connections=30",
                   f"--secure-file-priv={self.base}"]
        # Its own process group: stop() can signal runuser and the server together.
        self._process = subprocess.Popen(as_user(command, self.run_as), cwd=self.base, start_new_session=True,
                                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            if self._process.poll() is not None:  # e.g. the port was taken meanwhile
                code, self._process = self._process.returncode, None
                raise RuntimeError(f"mariadbd exited with {code}:\n{log_tail(self.log_file)}")
            try:
                self.root_connection().close()
                return
            except Exception as exc:  # noqa: BLE001 - not accepting connections yet
                if time.monotonic() > deadline:
                    self._kill()
                    raise RuntimeError(f"mariadbd did not accept connections within 60 s ({exc}):\n"
                                       f"{log_tail(self.log_file)}") from None
            time.sleep(0.2)

    def _kill(self) -> None:
        """SIGTERM to the server's process group (SIGKILL if it lingers); nothing when it has stopped."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
            try:
                os.killpg(process.pid, sig)
            except ProcessLookupError:
                return
            try:
                process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def stop(self) -> None:
        try:
            if self._process is not None and self._process.poll() is None:
                try:
                    subprocess.run([self.admin, "--no-defaults", f"--socket={self.socket}", "--user=root",
                                    "shutdown"], capture_output=True, timeout=30)
                    self._process.wait(30)
                except (OSError, subprocess.TimeoutExpired):
                    pass
        finally:
            self._kill()
            remove_base_dir(self.base)
            self.base = None

    def root_connection(self, database: str | None = None):
        """A mysqlclient connection as root, over the unix socket (no password), autocommit."""
        import MySQLdb

        conn = MySQLdb.connect(unix_socket=self.socket, user="root", passwd="", connect_timeout=5,
                               **({"database": database} if database else {}))
        conn.autocommit(True)
        return conn

    def sql(self, statement: str, *args, database: str | None = None) -> None:
        conn = self.root_connection(database)
        try:
            cursor = conn.cursor()
            cursor.execute(statement, args or None)
            cursor.close()
        finally:
            conn.close()
