"""Helpers for the monitor-page tests: a zkserver in its own process, a headless Chromium,
blocking terminal uploads, and page queries.

Selenium is blocking, so nothing here touches the Twisted reactor: the server under test
runs as ``twistd -n zkserver`` in a subprocess and terminals are driven with urllib.

To add a test for another kind of device (e.g. a pull device through the emulator), make
the device punch by whatever means, then reuse :func:`wait_for_row` / :func:`feed_rows`:
rows carry ``data-serial``, ``data-device-id``, ``data-user`` and ``data-timestamp``, so a
pull punch is found exactly like a push punch.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("ZKSERVER_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("ZKSERVER_CHROMEDRIVER", "/usr/bin/chromedriver")
ARTIFACTS = REPO / "test-artifacts"

__all__ = [
    "ServerProcess",
    "free_port",
    "browser_available",
    "browser_missing",
    "chromium",
    "upload_attlog",
    "handshake",
    "attlog",
    "now_text",
    "today_count",
    "feed_rows",
    "wait_for_row",
    "wait_until",
    "login",
    "connection_state",
    "screenshot",
    "console_errors",
    "set_viewport",
    "upload_users",
    "row_present",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def now_text(offset_seconds: float = 0) -> str:
    """A device-local timestamp, ``offset_seconds`` from now (it may fall on another day)."""
    return datetime.fromtimestamp(time.time() + offset_seconds).strftime("%Y-%m-%d %H:%M:%S")


def today_count(driver: WebDriver, *timestamps: str) -> str:
    """How many of ``timestamps`` the page counts as today, as its totals show it ("3").

    The page's "today" is the browser's local date, asked of the browser (its zone may not
    be this process's: Chromium reads only IANA names from ``$TZ``). Near midnight a
    timestamp from ``now_text(-3000)`` is yesterday's and is not counted. Call it inside a
    ``wait_until`` predicate so a date that changes mid-test is followed.
    """
    today = driver.execute_script(
        "const d = new Date(); const p = (n) => String(n).padStart(2, '0');"
        "return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}`;"
    )
    return str(sum(1 for ts in timestamps if ts.startswith(today)))


def wait_until(
    predicate: Callable[[], Any],
    timeout: float = 10.0,
    interval: float = 0.02,
    message: str = "condition",
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"{message} not met within {timeout} s")
        time.sleep(interval)


# ---------------------------------------------------------------------------- the server
@dataclass
class ServerProcess:
    """``twistd -n zkserver`` in a subprocess on loopback ports chosen here.

    ``restart()`` stops it and starts it again on the same ports and data, as an operator
    restarting the service would."""

    db: str
    data_dir: Path
    token: str = field(default_factory=lambda: "t-" + secrets.token_urlsafe(12))
    extra: tuple[str, ...] = ()
    push_port: int = field(default_factory=free_port)
    web_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    starts: int = 0

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def push_url(self) -> str:
        return f"http://127.0.0.1:{self.push_port}"

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-c",
            "from twisted.scripts.twistd import run; run()",
            "-n",
            "--pidfile=",
            "zkserver",
            "--data-dir",
            str(self.data_dir),
            "--db",
            self.db,
            "--push",
            f"tcp:{self.push_port}:interface=127.0.0.1",
            "--web",
            f"tcp:{self.web_port}:interface=127.0.0.1",
            f"--token={self.token}",
            *self.extra,
        ]

    def start(self, timeout: float = 20.0) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        self.log_path = self.data_dir / f"twistd-{self.starts}.log"
        env = dict(os.environ)
        # The plugin lives in REPO/twisted/plugins: put the source tree first on the path
        # (works whether or not the package is installed, and never finds a stale copy).
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                self.command(),
                cwd=str(REPO),
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"zkserver exited ({self.process.returncode}):\n{self.log()}")
            # /healthz first; then a query that needs the schema, because /healthz can
            # answer "ok" before the migrations have run (seen on PostgreSQL).
            try:
                with urllib.request.urlopen(f"{self.web_url}/healthz", timeout=1) as r:
                    if r.status == 200 and self.api("GET", "/api/devices")[0] == 200:
                        return
            except (OSError, urllib.error.URLError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"zkserver did not answer /healthz in {timeout} s:\n{self.log()}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def restart(self) -> None:
        self.stop()
        self.start()

    def log(self) -> str:
        if self.log_path and self.log_path.exists():
            return self.log_path.read_text(errors="replace")[-6000:]
        return ""

    def api(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """Blocking API call with the token: (status, decoded JSON or text)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.web_url + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self.token}",
                **({"Content-Type": "application/json"} if data else {}),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as r:
                status, raw = r.status, r.read()
        except urllib.error.HTTPError as e:
            status, raw = e.code, e.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw.decode(errors="replace")

    def device(self, serial: str) -> dict[str, Any] | None:
        status, devices = self.api("GET", "/api/devices")
        assert status == 200, devices
        return next((d for d in devices if d["serial_number"] == serial), None)


# ------------------------------------------------------------------ push terminal, blocking
def attlog(*rows: tuple[str, str] | tuple[str, str, int, int]) -> bytes:
    """ATTLOG lines: (pin, timestamp[, status, verify])."""
    lines = []
    for row in rows:
        pin, ts, status, verify = (*row, 0, 15)[:4] if len(row) == 2 else row
        lines.append(f"{pin}\t{ts}\t{status}\t{verify}\t0\t0\t0")
    return "\n".join(lines).encode()


def _terminal(url: str, data: bytes | None = None, timeout: float = 5.0) -> tuple[int, str]:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def handshake(server: ServerProcess, serial: str) -> tuple[int, str]:
    return _terminal(f"{server.push_url}/iclock/cdata?SN={serial}&options=all&pushver=2.4.1")


def upload_attlog(server: ServerProcess, serial: str, body: bytes) -> tuple[int, str]:
    """What a push terminal does: POST /iclock/cdata?table=ATTLOG. Raises OSError when
    the server is down (the terminal would keep the batch and resend it)."""
    return _terminal(f"{server.push_url}/iclock/cdata?SN={serial}&table=ATTLOG", body)


def upload_users(server: ServerProcess, serial: str, users: dict[str, str]) -> tuple[int, str]:
    body = "\n".join(
        f"USER PIN={pin}\tName={name}\tPri=0\tPasswd=\tCard=\tGrp=1" for pin, name in users.items()
    )
    return _terminal(f"{server.push_url}/iclock/cdata?SN={serial}&table=OPERLOG", body.encode())


# ---------------------------------------------------------------------------- the browser
def browser_available() -> bool:
    return browser_missing() is None


def browser_missing() -> str | None:
    """Why the browser tests cannot run, and what to do (None when they can)."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).exists()]
    if not missing:
        return None
    return (
        "install Debian packages chromium and chromium-driver (apt-get install chromium "
        f"chromium-driver): {' and '.join(missing)} not found (or set ZKSERVER_CHROMIUM, "
        "ZKSERVER_CHROMEDRIVER)"
    )


@contextmanager
def chromium(width: int = 1280, height: int = 800) -> Iterator[WebDriver]:
    profile = tempfile.mkdtemp(prefix="zkserver-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
        "--force-device-scale-factor=1",
        "--lang=en-US",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.set_window_size(width, height)
        yield driver
    finally:
        try:
            driver.quit()
        finally:
            shutil.rmtree(profile, ignore_errors=True)


def set_viewport(driver: WebDriver, width: int, height: int) -> None:
    """Make the page's viewport exactly width x height (window chrome differs by mode)."""
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {
            "width": width,
            "height": height,
            "deviceScaleFactor": 1,
            "mobile": width < 600,
        },
    )


def fresh_page(driver: WebDriver, width: int = 1280, height: int = 800) -> WebDriver:
    """The shared browser with no cookies or console messages from a previous test (and its
    stopped server), at width x height."""
    driver.get("about:blank")
    driver.execute_cdp_cmd("Network.clearBrowserCookies", {})
    console_errors(driver)
    set_viewport(driver, width, height)
    return driver


def login(driver: WebDriver, server: ServerProcess, token: str | None = None) -> None:
    """Open the page, sign in through the form, wait for the app to show."""
    driver.get(server.web_url + "/")
    field_ = wait_until(lambda: _visible(driver, "token-input"), message="login form")
    field_.clear()
    field_.send_keys(token or server.token)
    driver.find_element(By.ID, "login-submit").click()
    wait_until(lambda: _visible(driver, "app-view"), message="app view after login")


def _visible(driver: WebDriver, element_id: str) -> WebElement | None:
    found = driver.find_elements(By.ID, element_id)
    return found[0] if found and found[0].is_displayed() else None


def connection_state(driver: WebDriver) -> str:
    return driver.find_element(By.ID, "conn").get_attribute("data-state") or ""


def wait_live(driver: WebDriver, timeout: float = 10, message: str = "stream live") -> None:
    """Wait until the page shows its stream as live."""
    wait_until(lambda: connection_state(driver) == "live", timeout, message=message)


def feed_rows(driver: WebDriver) -> list[dict[str, str]]:
    """The feed as the page shows it, newest first (one JS call, cheap enough to poll)."""
    return driver.execute_script(
        """return [...document.querySelectorAll('#feed > li.punch')].map(li => ({
             serial: li.dataset.serial, device_id: li.dataset.deviceId, user: li.dataset.user,
             timestamp: li.dataset.timestamp, key: li.dataset.key,
             text: li.innerText.replace(/\\s+/g, ' ').trim()}));"""
    )


def row_present(driver: WebDriver, serial: str, user_id: str, timestamp: str) -> bool:
    return bool(
        driver.execute_script(
            """const [s, u, t] = arguments;
           return [...document.querySelectorAll('#feed > li.punch')].some(li =>
             li.dataset.serial === s && li.dataset.user === u && li.dataset.timestamp === t);""",
            serial,
            user_id,
            timestamp,
        )
    )


def wait_for_row(
    driver: WebDriver, serial: str, user_id: str, timestamp: str, timeout: float = 10.0
) -> float:
    """Poll until the punch's row is on the page; returns the seconds it took."""
    started = time.monotonic()
    wait_until(
        lambda: row_present(driver, serial, user_id, timestamp),
        timeout,
        interval=0.01,
        message=f"row {serial}/{user_id}/{timestamp}",
    )
    return time.monotonic() - started


def screenshot(driver: WebDriver, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    driver.save_screenshot(str(path))
    return path


def console_errors(driver: WebDriver) -> list[str]:
    try:
        logs = driver.get_log("browser")
    except Exception:
        return []
    return [entry["message"] for entry in logs if entry.get("level") == "SEVERE"]


# The marks of every browser test module (``pytestmark = BROWSER_TEST_MARKS``): locally the
# browser tests skip without Chromium; under CI they must run.
BROWSER_TEST_MARKS = [
    pytest.mark.skipif(
        not browser_available() and not os.environ.get("CI"), reason=browser_missing() or ""
    ),
    pytest.mark.timeout(180),
]
