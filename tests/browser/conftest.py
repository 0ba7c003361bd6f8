"""A real ``airflow api-server`` and a headless Chromium, both started and stopped by process group.

Neither is optional: if Chromium, chromedriver or the API server cannot
start, the fixture raises and the browser test fails (it never skips).
Install the browser with ``apt-get install -y chromium chromium-driver``.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CODEAGENT_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CODEAGENT_CHROMEDRIVER", "/usr/bin/chromedriver")
USERNAME = "admin"
START_TIMEOUT_S = 90


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_group(process: subprocess.Popen, grace_s: float = 10) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left of it."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=grace_s)


def install_plugin_for_subprocesses() -> None:
    """Until the package's ``airflow.plugins`` entry point is installed, load the plugin from the plugins folder."""
    from airflow import settings

    if any(ep.value.startswith("airflow_codeagent.plugins") for ep in entry_points(group="airflow.plugins")):
        return
    folder = Path(settings.PLUGINS_FOLDER)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "codeagent_trace_view.py").write_text(
        "from airflow_codeagent.plugins import CodeAgentPlugin  # noqa: F401\n")


@dataclass
class ApiServer:
    base_url: str
    password: str
    log: Path


@pytest.fixture(scope="module")
def api_server(airflow_db, tmp_path_factory):
    """``airflow api-server`` on a free 127.0.0.1 port, in the tests' AIRFLOW_HOME, with one SimpleAuthManager user."""
    install_plugin_for_subprocesses()
    work = tmp_path_factory.mktemp("api-server")
    password = secrets.token_urlsafe(12)
    passwords_file = work / "passwords.json"
    passwords_file.write_text(json.dumps({USERNAME: password}))
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "AIRFLOW__CORE__AUTH_MANAGER":
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USERNAME}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords_file),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(48),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__API__BASE_URL": base_url,
        "AIRFLOW__API__EXPOSE_CONFIG": "False",
    }
    log = work / "api-server.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "airflow", "api-server", "--host", "127.0.0.1", "--port", str(port),
             "--workers", "1"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"airflow api-server exited with {process.returncode}:\n"
                                   f"{log.read_text()[-4000:]}")
            try:
                with urllib.request.urlopen(f"{base_url}/api/v2/monitor/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"airflow api-server did not answer in {START_TIMEOUT_S}s:\n"
                                   f"{log.read_text()[-4000:]}")
            time.sleep(0.5)
        yield ApiServer(base_url=base_url, password=password, log=log)
    finally:
        stop_group(process)


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Chromium driven by chromedriver, in a fresh profile; both in their own process group."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    work = tmp_path_factory.mktemp("chromium")
    for path in (CHROMIUM, CHROMEDRIVER):
        assert Path(path).exists(), f"{path} is missing: apt-get install -y chromium chromium-driver"
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run",
                 "--disable-dev-shm-usage", "--window-size=1440,1100", "--lang=en-US",
                 f"--user-data-dir={work / 'profile'}"):
        options.add_argument(flag)
    service = Service(executable_path=CHROMEDRIVER, log_output=str(work / "chromedriver.log"),
                      popen_kw={"start_new_session": True})
    driver = webdriver.Chrome(service=service, options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        try:
            driver.quit()
        finally:
            process = getattr(service, "process", None)
            if process is not None:
                stop_group(process, grace_s=5)
