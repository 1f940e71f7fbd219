"""The monitoring page (``GET /``) in a real headless Chromium against a real zkserver.

The server runs as ``twistd -n zkserver`` in its own process (see tests/web/browser.py):
selenium blocks, so these are plain pytest tests, never on the Twisted reactor. They run on
every backend of tests/databases.py (SQLite always; PostgreSQL when reachable).

Pull devices: the pull emulator runs as its own process with ``--stdin`` (each line makes
the device punch), the server connects to it, and the row is found exactly as a push one.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from tests.web.browser import (
    BROWSER_TEST_MARKS,
    ServerProcess,
    attlog,
    connection_state,
    console_errors,
    feed_rows,
    free_port,
    fresh_page,
    handshake,
    login,
    now_text,
    row_present,
    screenshot,
    set_viewport,
    today_count,
    upload_attlog,
    upload_users,
    wait_for_row,
    wait_live,
    wait_until,
)

pytestmark = BROWSER_TEST_MARKS

SN = "PYA8252300166"
SN2 = "CQZ7231400021"
LATENCY_BOUND = 1.0  # seconds from upload to row on the page (the requirement)


@pytest.fixture
def page(driver: WebDriver) -> WebDriver:
    """The shared browser with no cookies from a previous test, at desktop size."""
    return fresh_page(driver)


@pytest.fixture
def server(start_monitor: Callable[..., ServerProcess]) -> ServerProcess:
    return start_monitor("--auto-approve")


def rows_by_key(driver: WebDriver) -> Counter[str]:
    return Counter(row["key"] for row in feed_rows(driver))


def unexpected_console_errors(driver: WebDriver) -> list[str]:
    # The page probes GET /api/session and gets 401 before login: that one is expected.
    return [m for m in console_errors(driver) if "/api/session" not in m]


def test_login_with_token_then_feed_renders(page: WebDriver, server: ServerProcess):
    handshake(server, SN)
    handshake(server, SN2)
    upload_users(server, SN, {"1001": "Alice Johnson"})
    earlier, later = now_text(-120), now_text(-60)
    assert upload_attlog(server, SN, attlog(("1001", earlier, 0, 15))) == (200, "OK: 1")
    assert upload_attlog(server, SN2, attlog(("2002", later, 1, 1)))[0] == 200

    page.get(server.web_url + "/")
    token_field = wait_until(
        lambda: (
            page.find_element(By.ID, "token-input").is_displayed()
            and page.find_element(By.ID, "token-input")
        )
    )
    label = page.find_element(By.CSS_SELECTOR, "label[for=token-input]")
    assert label.text == "Access token"
    assert not page.find_element(By.ID, "app-view").is_displayed()

    token_field.send_keys("wrong-token")
    page.find_element(By.ID, "login-submit").click()
    wait_until(lambda: "not accepted" in page.find_element(By.ID, "login-error").text)

    login(page, server)
    wait_live(page)
    wait_until(lambda: len(feed_rows(page)) == 2, message="two history rows")
    newest, older = feed_rows(page)
    assert newest["serial"] == SN2 and "Out" in newest["text"] and "Fingerprint" in newest["text"]
    assert older["serial"] == SN and older["timestamp"] == earlier
    assert "Alice Johnson" in older["text"] and "1001" in older["text"]
    assert "In" in older["text"] and "Face" in older["text"]
    assert f"Push Device {SN}" in older["text"]

    # Today's totals and the device panel (only today's punches count: see today_count).
    def totals() -> tuple[str, ...]:
        return tuple(page.find_element(By.ID, f"stat-{k}").text for k in ("total", "in", "out"))

    wait_until(
        lambda: (
            totals()
            == (
                today_count(page, earlier, later),
                today_count(page, earlier),
                today_count(page, later),
            )
        ),
        timeout=2,
        message="today's totals",
    )
    assert page.find_element(By.ID, "stat-online").text == "2"
    card = page.find_element(By.CSS_SELECTOR, f'#devices li[data-serial="{SN}"]')
    assert "Online" in card.text and "Push" in card.text
    wait_until(
        lambda: (
            card.find_element(By.CSS_SELECTOR, ".device-today").text == today_count(page, earlier)
        ),
        timeout=2,
        message="the device's count today",
    )

    # The session is an HttpOnly, SameSite=Strict cookie: a reload asks nothing.
    cookie = next(c for c in page.get_cookies() if c["name"] == "zkserver_session")
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert server.token not in cookie["value"]
    page.refresh()
    wait_live(page)
    assert not page.find_element(By.ID, "login-view").is_displayed()
    wait_until(lambda: len(feed_rows(page)) == 2)

    # Filters: by device, then by user (id or name).
    device_id = server.device(SN)["id"]
    Select(page.find_element(By.ID, "filter-device")).select_by_value(device_id)
    wait_until(lambda: [r["serial"] for r in feed_rows(page)] == [SN])
    Select(page.find_element(By.ID, "filter-device")).select_by_value("")
    page.find_element(By.ID, "filter-user").send_keys("alice")
    wait_until(lambda: [r["user"] for r in feed_rows(page)] == ["1001"])
    page.find_element(By.ID, "filter-clear").click()
    wait_until(lambda: len(feed_rows(page)) == 2)
    assert unexpected_console_errors(page) == []


def test_login_link_with_token_is_stripped_from_the_address_bar(
    page: WebDriver, server: ServerProcess
):
    page.get(f"{server.web_url}/?token={server.token}")
    wait_live(page)
    assert "token" not in page.current_url
    assert page.execute_script("return location.search") == ""
    assert any(c["name"] == "zkserver_session" for c in page.get_cookies())


def test_push_punch_appears_within_one_second(page: WebDriver, server: ServerProcess):
    handshake(server, SN)
    handshake(server, SN2)
    server.api("PATCH", f"/api/devices/{server.device(SN)['id']}", {"name": "Main entrance"})
    server.api("PATCH", f"/api/devices/{server.device(SN2)['id']}", {"name": "Warehouse gate"})
    upload_users(server, SN, {"1001": "Alice Johnson", "1002": "Bilal Rahman"})
    upload_users(server, SN2, {"2001": "Dana Kowalski"})
    history = [
        (SN, "1002", -3000, 0, 1),
        (SN2, "2001", -2400, 0, 4),
        (SN, "1002", -1200, 2, 1),
        (SN, "1002", -900, 3, 1),
        (SN2, "2001", -300, 1, 15),
    ]
    stamps = [now_text(offset) for _, _, offset, _, _ in history]
    for (serial, pin, _, status, verify), stamp in zip(history, stamps, strict=True):
        upload_attlog(server, serial, attlog((pin, stamp, status, verify)))
    login(page, server)
    wait_live(page)
    wait_until(lambda: len(feed_rows(page)) == len(history))

    timings = []
    live = []
    for i in range(3):
        ts = now_text(i)
        live.append(ts)
        started = time.monotonic()
        assert upload_attlog(server, SN, attlog(("1001", ts, 0, 15))) == (200, "OK: 1")
        wait_for_row(page, SN, "1001", ts, timeout=5)
        timings.append(time.monotonic() - started)
    print(f"\nupload -> row on the page: {', '.join(f'{t * 1000:.0f} ms' for t in timings)}")
    assert max(timings) <= LATENCY_BOUND, timings

    # A live event carries no user name: the page looks it up per device.
    wait_until(lambda: "Alice Johnson" in feed_rows(page)[0]["text"], message="name lookup")
    newest = feed_rows(page)[0]
    assert "In" in newest["text"] and "Face" in newest["text"] and "Main entrance" in newest["text"]
    wait_until(
        lambda: page.find_element(By.ID, "stat-total").text == today_count(page, *stamps, *live)
    )
    assert rows_by_key(page).most_common(1)[0][1] == 1

    time.sleep(2.6)  # let the arrival highlight fade for the screenshots
    desktop = screenshot(page, "monitor.png")
    set_viewport(page, 390, 844)
    time.sleep(0.3)
    screenshot(page, "monitor-phone.png")
    set_viewport(page, 1920, 1080)
    time.sleep(0.3)
    screenshot(page, "monitor-wall.png")
    assert desktop.stat().st_size > 10_000
    assert unexpected_console_errors(page) == []


def test_pending_device_is_approved_from_the_page(
    page: WebDriver, start_monitor: Callable[..., ServerProcess]
):
    server = start_monitor()  # no --auto-approve
    login(page, server)
    wait_live(page)
    assert handshake(server, "NEW9900123")[0] == 403  # unknown: recorded as pending
    card_css = '#devices li[data-serial="NEW9900123"]'
    card = wait_until(lambda: page.find_elements(By.CSS_SELECTOR, card_css), message="card")[0]
    assert card.get_attribute("data-status") == "pending"
    assert "Pending" in card.text
    button = card.find_element(By.CSS_SELECTOR, "button.approve")
    assert button.is_displayed() and button.accessible_name == "Approve Push Device NEW9900123"
    button.click()

    wait_until(lambda: server.device("NEW9900123")["approved"], message="approved via API")
    wait_until(
        lambda: not page.find_element(By.CSS_SELECTOR, f"{card_css} button.approve").is_displayed(),
        message="approve button gone",
    )
    assert page.find_element(By.CSS_SELECTOR, card_css).get_attribute("data-status") != "pending"
    # Approved: the terminal's records are accepted and stream to the page.
    ts = now_text()
    assert upload_attlog(server, "NEW9900123", attlog(("7", ts))) == (200, "OK: 1")
    wait_for_row(page, "NEW9900123", "7", ts, timeout=5)


def test_restart_replays_missed_punches_exactly_once(page: WebDriver, server: ServerProcess):
    handshake(server, SN)
    before = now_text(-30)
    upload_attlog(server, SN, attlog(("1001", before)))
    login(page, server)
    wait_live(page)
    wait_for_row(page, SN, "1001", before)

    server.stop()
    wait_until(
        lambda: connection_state(page) in ("reconnecting", "offline"),
        timeout=10,
        message="page notices the server is gone",
    )
    # The terminal punches while the server is down: its upload fails, it keeps the batch.
    missed = [("1002", now_text(-2)), ("1003", now_text(-1))]
    batch = attlog(("1001", before), *missed)
    with pytest.raises(OSError):
        upload_attlog(server, SN, batch)

    server.start()
    # After the restart the terminal resends the whole batch (one row already saved).
    assert upload_attlog(server, SN, batch) == (200, "OK: 3")
    wait_live(page, timeout=20)  # reconnected by itself, no reload
    for pin, ts in missed:
        wait_for_row(page, SN, pin, ts, timeout=10)
    time.sleep(1.0)  # give any duplicate a chance to show up
    counts = rows_by_key(page)
    assert len(counts) == 3 and set(counts.values()) == {1}, counts
    stamps = [before, *(ts for _, ts in missed)]
    assert page.find_element(By.ID, "stat-total").text == today_count(page, *stamps)

    # A reload (history from the API, then the stream) shows each punch once too.
    page.refresh()
    wait_live(page)
    wait_until(lambda: len(feed_rows(page)) == 3)
    time.sleep(0.5)
    counts = rows_by_key(page)
    assert len(counts) == 3 and set(counts.values()) == {1}, counts
    assert all(row_present(page, SN, pin, ts) for pin, ts in [("1001", before), *missed])


def test_keyboard_reaches_the_controls(page: WebDriver, server: ServerProcess):
    from selenium.webdriver.common.keys import Keys

    login(page, server)
    wait_live(page)
    body = page.find_element(By.TAG_NAME, "body")
    body.send_keys(Keys.TAB)
    seen = []
    for _ in range(12):  # the page's controls, then round again from the top
        seen.append(
            page.switch_to.active_element.get_attribute("id") or page.switch_to.active_element.text
        )
        page.switch_to.active_element.send_keys(Keys.TAB)
    for control in (
        "logout",
        "filter-device",
        "filter-user",
        "filter-clear",
        "people-q",
        "person-add",
    ):
        assert control in seen, seen
    # Focus is visible: the focused control draws an outline.
    page.find_element(By.ID, "filter-user").send_keys(Keys.TAB)
    outline = page.execute_script("return getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("", "none")


def test_pull_punch_appears_within_one_second(page: WebDriver, server: ServerProcess):
    port = free_port()
    emulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "zkserver.emulator",
            "pull",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--serial",
            "EMUPULL01",
            "--users",
            "3",
            "--stdin",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert emulator.stdin is not None and emulator.stdout is not None
        time.sleep(0.5)
        status, device = server.api(
            "POST",
            "/api/devices",
            {"kind": "pull", "host": "127.0.0.1", "port": port, "name": "Front office"},
        )
        assert status == 201, device
        wait_until(
            lambda: server.device("EMUPULL01") and server.device("EMUPULL01")["status"] == "online",
            15,
            message="pull online",
        )

        def registered() -> bool:  # the server registers for events after its catch-up
            emulator.stdin.write(b"sessions\n")
            emulator.stdin.flush()
            return emulator.stdout.readline().decode().split() != ["sessions", "0"]

        wait_until(registered, 15, interval=0.1, message="registered for real-time events")
        login(page, server)
        wait_live(page)
        timings = []
        for user_id, state in (("2", 0), ("3", 1)):  # distinct users: same second is fine
            started = time.monotonic()
            emulator.stdin.write(f"{user_id} {state} 1\n".encode())
            emulator.stdin.flush()
            _, user, day, clock = emulator.stdout.readline().decode().split()
            wait_for_row(page, "EMUPULL01", user, f"{day} {clock}", timeout=5)
            timings.append(time.monotonic() - started)
        shown = ", ".join(f"{t * 1000:.0f} ms" for t in timings)
        print(f"\npull punch -> row on the page: {shown}")
        assert max(timings) <= LATENCY_BOUND, timings
        newest = feed_rows(page)[0]
        assert "Front office" in newest["text"] and "Out" in newest["text"]
        assert rows_by_key(page).most_common(1)[0][1] == 1
    finally:
        emulator.terminate()
        emulator.wait(10)


def access_rows(driver: WebDriver) -> list[dict[str, str]]:
    return driver.execute_script(
        """return [...document.querySelectorAll('#feed > li.access-event')].map(li => ({
             kind: li.dataset.kind, text: li.innerText.replace(/\\s+/g, ' ').trim()}));"""
    )


def test_door_and_alarm_events_and_open_alerts(
    page: WebDriver, start_monitor: Callable[..., ServerProcess]
):
    server = start_monitor(
        "--auto-approve", "--poll-delay", "1", "--alert-silent", "4", "--alert-interval", "0.3"
    )
    handshake(server, SN)
    upload_attlog(server, SN, attlog(("1001", now_text(-60), 0, 1)))
    login(page, server)
    wait_live(page)
    rtlog = f"{server.push_url}/iclock/cdata?SN={SN}&table=rtlog"
    for event in (200, 100):
        line = f"time={now_text(0)}\tpin=0\tcardno=0\teventaddr=1\tevent={event}\tinoutstatus=0"
        assert _post(rtlog, line.encode()) == (200, "OK: 1")
    wait_until(lambda: len(access_rows(page)) == 2, message="door and alarm rows")
    alarm, door = access_rows(page)  # newest first
    assert door["kind"] == "door" and "Door 1 opened" in door["text"] and "DOOR" in door["text"]
    assert alarm["kind"] == "alarm" and "Alarm: tamper (active)" in alarm["text"]
    # The filter shows door and alarm events alone, or punches alone.
    show = Select(page.find_element(By.ID, "filter-kind"))
    show.select_by_value("access")
    wait_until(lambda: len(feed_rows(page)) == 2, message="access filter")
    show.select_by_value("punches")
    wait_until(lambda: len(feed_rows(page)) == 1 and not access_rows_shown(page))
    show.select_by_value("")
    # The terminal falls silent: the device panel shows the open alert.
    wait_until(
        lambda: (
            "Silent"
            in page.execute_script(
                "const a = document.querySelector('.device-alert'); return a ? a.innerText : '';"
            )
        ),
        timeout=20,
        message="silent alert in the device panel",
    )
    handshake(server, SN)  # back: the alert recovers and leaves the panel
    wait_until(
        lambda: not page.find_elements(By.CSS_SELECTOR, ".device-alert"),
        timeout=20,
        message="alert cleared",
    )
    assert unexpected_console_errors(page) == []


def access_rows_shown(driver: WebDriver) -> bool:
    return bool(driver.find_elements(By.CSS_SELECTOR, "#feed > li.access-event"))


def _post(url: str, body: bytes) -> tuple[int, str]:
    import urllib.request

    request = urllib.request.Request(url, data=body, method="POST")
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, response.read().decode()


def _closed_port() -> int:
    """A free port below the ephemeral range (no outgoing connection gets it by chance)."""
    import random
    import socket

    for port in random.sample(range(20_000, 30_000), 50):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise AssertionError("no free port")


def test_why_a_device_is_offline_is_shown_and_cleared(page: WebDriver, server: ServerProcess):
    port = _closed_port()
    status, device = server.api(
        "POST",
        "/api/devices",
        {"kind": "pull", "host": "127.0.0.1", "port": port, "name": "Back door"},
    )
    assert status == 201, device
    login(page, server)
    wait_live(page)
    selector = f'.device[data-device-id="{device["id"]}"] .device-detail'
    wait_until(
        lambda: page.find_element(By.CSS_SELECTOR, selector).text == "connection refused",
        15,
        message="detail shown",
    )
    assert page.find_element(By.CSS_SELECTOR, selector).is_displayed()
    # the terminal comes up: the device goes online and the detail goes away
    emulator = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "zkserver.emulator",
            "pull",
            "--listen",
            f"tcp:{port}:interface=127.0.0.1",
            "--serial",
            "EMUWHY01",
            "--users",
            "1",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(
            lambda: not page.find_element(By.CSS_SELECTOR, selector).is_displayed(),
            30,
            message="detail cleared",
        )
        node = page.find_element(By.CSS_SELECTOR, f'.device[data-device-id="{device["id"]}"]')
        assert node.get_attribute("data-status") == "online"
        assert page.find_element(By.CSS_SELECTOR, selector).text == ""
    finally:
        emulator.terminate()
        emulator.wait(10)
