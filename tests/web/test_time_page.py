"""The page's time features in a real headless Chromium against a real zkserver (SQLite and
PostgreSQL): punch times in the viewer's chosen zone, suspect punches marked, and the Today
view (who is in now, who punched today, first and last per person), live from the stream."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select

from tests.web.browser import (
    BROWSER_TEST_MARKS,
    ServerProcess,
    attlog,
    console_errors,
    fresh_page,
    login,
    screenshot,
    upload_attlog,
    upload_users,
    wait_live,
    wait_until,
)

pytestmark = BROWSER_TEST_MARKS

HERE = "TODAY0001"  # a terminal in UTC, like the (UTC) browser
BERLIN = "BERLIN001"


@pytest.fixture
def page(driver: WebDriver) -> WebDriver:
    fresh_page(driver, 1280, 900)
    driver.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "UTC"})
    driver.execute_script("try { localStorage.clear(); } catch (e) {}")
    return driver


@pytest.fixture
def server(start_monitor: Callable[..., ServerProcess]) -> ServerProcess:
    return start_monitor("--auto-approve")


def utc_text(offset_seconds: float = 0) -> str:
    moment = datetime.now(UTC) + timedelta(seconds=offset_seconds)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def today_view(page: WebDriver) -> dict[str, Any]:
    return page.execute_script("return window.zkMonitor.todayView();")


def add_device(server: ServerProcess, serial: str, zone: str) -> None:
    code, body = server.api("POST", "/api/devices", {"serial_number": serial, "timezone": zone})
    assert code == 201, body


def day_starting_before(local_now: datetime, hours: int = 2) -> str:
    """A ``--day-starts-at`` value ``hours`` before ``local_now``: the test's punches (up
    to an hour old) and the minutes it runs all fall in one day, whatever the clock says.
    Without it, a run just after midnight finds the history in yesterday."""
    return (local_now - timedelta(hours=hours)).strftime("%H:%M")


def test_today_view_zone_choice_and_suspect_marks(
    page: WebDriver, start_monitor: Callable[..., ServerProcess]
):
    server = start_monitor(
        "--auto-approve", "--day-starts-at", day_starting_before(datetime.now(UTC))
    )
    add_device(server, HERE, "UTC")
    add_device(server, BERLIN, "Europe/Berlin")
    assert upload_users(server, HERE, {"1001": "Alice Johnson", "1002": "Bob Stone"})[0] == 200
    bob_in, bob_out = utc_text(-3000), utc_text(-600)
    history = attlog(
        ("1001", utc_text(-3600), 0, 1),  # Alice in
        ("1002", bob_in, 0, 1),  # Bob in ...
        ("1002", bob_out, 1, 1),  # ... and out again
    )
    assert upload_attlog(server, HERE, history) == (200, "OK: 3")
    # Berlin's skipped hour: 02:30 there is read as 01:30 UTC.
    assert upload_attlog(server, BERLIN, attlog(("7", "2026-03-29 02:30:00", 0, 1)))[0] == 200

    login(page, server)
    wait_live(page)
    wait_until(lambda: today_view(page)["punched"] == ["1001", "1002"], message="today loaded")
    view = today_view(page)
    assert view["in_now"] == ["1001"]
    assert view["people"]["1001"]["name"] == "Alice Johnson"
    assert view["people"]["1002"] == {
        "name": "Bob Stone",
        "punches": 2,
        "first": bob_in,
        "last": bob_out,
    }
    table = page.find_element(By.ID, "today-section").text
    assert "Alice Johnson" in table and "Bob Stone" in table
    assert page.find_element(By.ID, "today-in").text == "1"
    assert page.find_element(By.ID, "today-punched").text == "2"

    # Live: Alice leaves, someone without a name or state arrives.
    assert upload_attlog(server, HERE, attlog(("1001", utc_text(-5), 1, 1)))[0] == 200
    wait_until(lambda: today_view(page)["in_now"] == [], message="Alice out")
    assert upload_attlog(server, HERE, attlog(("1003", utc_text(-2), 255, 1)))[0] == 200
    wait_until(lambda: today_view(page)["in_now"] == ["1003"], message="1003 in (one punch)")
    view = today_view(page)
    assert view["punched"] == ["1001", "1002", "1003"]
    assert view["people"]["1001"]["punches"] == 2
    rows = page.find_elements(By.CSS_SELECTOR, "#today-list tr")
    assert [r.get_attribute("data-in") for r in rows][0] == "true"  # who is in comes first

    # A terminal an hour in the future: kept, marked on the page.
    ahead = utc_text(3600)
    assert upload_attlog(server, HERE, attlog(("1002", ahead, 0, 1)))[0] == 200
    css = f'#feed li.punch[data-timestamp="{ahead}"]'
    row = wait_until(lambda: page.find_elements(By.CSS_SELECTOR, css), message="future row")[0]
    assert "is-suspect" in row.get_attribute("class")
    badge = row.find_element(By.CSS_SELECTOR, ".suspect")
    assert badge.is_displayed() and "future" in badge.get_attribute("title")
    normal = page.find_element(By.CSS_SELECTOR, "#feed li.punch[data-user='1003']")
    assert "is-suspect" not in normal.get_attribute("class")

    # Times in the viewer's chosen zone (default: each device's own).
    berlin_css = f'#feed li.punch[data-serial="{BERLIN}"]'
    berlin_row = page.find_element(By.CSS_SELECTOR, berlin_css)
    assert berlin_row.get_attribute("data-shown") == "2026-03-29 02:30:00"
    assert "02:30:00" in berlin_row.text
    Select(page.find_element(By.ID, "filter-zone")).select_by_value("UTC")
    wait_until(
        lambda: (
            page.find_element(By.CSS_SELECTOR, berlin_css).get_attribute("data-shown")
            == "2026-03-29 01:30:00"
        ),
        message="shown in UTC",
    )
    assert "01:30:00" in page.find_element(By.CSS_SELECTOR, berlin_css).text
    Select(page.find_element(By.ID, "filter-zone")).select_by_value("America/New_York")
    wait_until(
        lambda: (
            page.find_element(By.CSS_SELECTOR, berlin_css).get_attribute("data-shown")
            == "2026-03-28 21:30:00"
        ),
        message="shown in New York",
    )
    # The choice is kept for the next visit.
    page.refresh()
    wait_live(page, message="live again")
    wait_until(lambda: page.find_elements(By.CSS_SELECTOR, berlin_css), message="row again")
    assert page.find_element(By.CSS_SELECTOR, berlin_css).get_attribute("data-shown") == (
        "2026-03-28 21:30:00"
    )
    assert (
        Select(page.find_element(By.ID, "filter-zone")).first_selected_option.get_attribute("value")
        == "America/New_York"
    )
    errors = [m for m in console_errors(page) if "/api/session" not in m]
    assert errors == []
    screenshot(page, "today.png")


def test_today_is_each_devices_own_today_when_the_viewer_is_a_day_behind(
    page: WebDriver, start_monitor: Callable[..., ServerProcess]
):
    # A viewer at UTC-12 and sites at UTC+14: their dates always differ (by one or two days).
    # A device without a zone of its own is in the server's (--timezone): its today too.
    kiritimati = timedelta(hours=14)
    server = start_monitor(
        "--auto-approve",
        "--day-starts-at",
        day_starting_before(datetime.now(UTC) + kiritimati),
        "--timezone",
        "Pacific/Kiritimati",
    )
    page.execute_cdp_cmd("Emulation.setTimezoneOverride", {"timezoneId": "Etc/GMT+12"})
    add_device(server, "KIRI0001", "Pacific/Kiritimati")
    add_device(server, "FIXED0001", "+14:00")
    add_device(server, "DEFAULT01", "")

    def there(seconds: float) -> str:
        return (datetime.now(UTC) + kiritimati + timedelta(seconds=seconds)).strftime(
            "%Y-%m-%d %H:%M:%S"
        )

    assert upload_attlog(server, "KIRI0001", attlog(("501", there(-120), 0, 1)))[0] == 200
    assert upload_attlog(server, "DEFAULT01", attlog(("503", there(-60), 0, 1)))[0] == 200
    login(page, server)
    wait_live(page)
    wait_until(lambda: today_view(page)["punched"] == ["501", "503"], message="today loaded")
    # Live, from a fixed-offset device in the same zone.
    assert upload_attlog(server, "FIXED0001", attlog(("502", there(-5), 0, 1)))[0] == 200
    wait_until(lambda: today_view(page)["punched"] == ["501", "502", "503"], message="live punch")
    assert today_view(page)["in_now"] == ["501", "502", "503"]
