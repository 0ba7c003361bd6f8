"""What the throwaway database servers of the SQLTool tests share (``postgres_server.py``, ``mysql_server.py``).

Each server runs from the machine's binaries (Debian packages) in a temp dir of
its own, listening on a free port of 127.0.0.1: no system service, nothing under
``/var/lib``. The servers refuse to run as root, so as root they run as the OS
user their Debian package creates (``postgres``, ``mysql``) through ``runuser``,
and their temp dir belongs to that user.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path


class ServerUnavailable(RuntimeError):
    """The binaries or the OS user a server needs are missing (the message says what to install)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_user(name: str, *, refuses_root: str, package: str,
                 unavailable: type[ServerUnavailable] = ServerUnavailable) -> str | None:
    """The OS user to run a server as: ``None`` unless this process is root, ``name`` then.

    ``refuses_root`` names the program that will not run as root, ``package`` the
    Debian package that creates the user; without the user ``unavailable`` is raised.
    """
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        raise unavailable(f"running as root, and {refuses_root} refuses root, but there is no {name!r} OS user "
                          f"to run the server as; `apt-get install {package}` creates it") from None
    return name


def as_user(command: Sequence[str], user: str | None) -> list[str]:
    """``command`` run as ``user`` (``runuser``, root only), or as it is when ``user`` is None."""
    return ["runuser", "-u", user, "--", *command] if user else list(command)


def make_base_dir(prefix: str, owner: str | None) -> Path:
    """A fresh temp dir the server's OS user owns.

    Not under pytest's ``tmp_path``: its parent is root's 0700 dir, which the server's user cannot enter.
    """
    base = Path(tempfile.mkdtemp(prefix=prefix))
    if owner:
        shutil.chown(base, user=owner, group=owner)
    return base


def remove_base_dir(base: Path | None) -> None:
    if base is not None:
        shutil.rmtree(base, ignore_errors=True)


def log_tail(log_file: Path | None, chars: int = 3000) -> str:
    if log_file is None or not log_file.exists():
        return ""
    return log_file.read_text(errors="replace")[-chars:]


def run(command: Sequence[str], *, user: str | None, cwd: Path, timeout: float = 120,
        log_file: Path | None = None) -> subprocess.CompletedProcess:
    """Run ``command`` (as ``user``) in the C locale; on failure raise with its output and the server log."""
    done = subprocess.run(as_user(command, user), capture_output=True, text=True, timeout=timeout, cwd=cwd,
                          env={**os.environ, "LC_ALL": "C", "LANG": "C"})
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}\n"
                           f"{log_tail(log_file)}")
    return done


def start_on_a_free_port(start: Callable[[int], None], what: str, attempts: int = 3) -> int:
    """``start(port)`` on a free port of 127.0.0.1; again on another if it raises ``RuntimeError``
    (the port may be taken between probing it and the server binding it). Returns the port."""
    last_error: Exception | None = None
    for _attempt in range(attempts):
        port = free_port()
        try:
            start(port)
            return port
        except RuntimeError as exc:
            last_error = exc
            time.sleep(0.5)
    raise RuntimeError(f"the test {what} server did not start: {last_error}")
