"""The device panel's controls in a real headless Chromium: reboot, sync time, open door and
clear log (after a confirmation) queue typed commands, and each device's recent commands
follow their status live from the stream's command_status events."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.remote.webelement import WebElement

from tests.commands.test_commands_restart import getrequest
from tests.web.browser import (
    BROWSER_TEST_MARKS,
    ServerProcess,
    console_errors,
    fresh_page,
    handshake,
    login,
    wait_live,
    wait_until,
)

pytestmark = BROWSER_TEST_MARKS

SN = "CTL0000001"
CARD = f'#devices li[data-serial="{SN}"]'


@pytest.fixture
def server(start_monitor: Callable[..., ServerProcess]) -> ServerProcess:
    return start_monitor("--auto-approve", "--no-pull")


def report(server: ServerProcess, serial: str, results: dict[str, int]) -> None:
    import urllib.request

    body = "\n".join(f"ID={i}&Return={code}&CMD=X" for i, code in results.items()).encode()
    request = urllib.request.Request(
        f"{server.push_url}/iclock/devicecmd?SN={serial}", data=body, method="POST"
    )
    with urllib.request.urlopen(request, timeout=5) as r:
        assert r.status == 200


def commands_shown(page: WebDriver) -> list[tuple[str, str, str]]:
    """(type, status, text) of the card's recent commands, newest first."""
    rows = page.execute_script(
        """return [...document.querySelectorAll(arguments[0] + ' .device-commands > li')]
             .map(li => [li.dataset.type, li.dataset.status, li.innerText.replace(/\\s+/g, ' ')
             .trim()]);""",
        CARD,
    )
    return [tuple(row) for row in rows]


def button(page: WebDriver, css: str) -> WebElement:
    return page.find_element(By.CSS_SELECTOR, f"{CARD} {css}")


def test_device_panel_sends_commands_and_shows_their_status_live(
    driver: WebDriver, server: ServerProcess
) -> None:
    page = fresh_page(driver)
    assert handshake(server, SN)[0] == 200
    assert handshake(server, "CTLPENDING")[0] == 200  # auto-approved too; then rejected
    other = server.device("CTLPENDING")
    assert other is not None
    server.api("POST", f"/api/devices/{other['id']}/reject")
    device = server.device(SN)
    assert device is not None

    login(page, server)
    wait_live(page)
    wait_until(lambda: page.find_elements(By.CSS_SELECTOR, CARD), message="device card")
    rejected = page.find_element(
        By.CSS_SELECTOR, '#devices li[data-serial="CTLPENDING"] .device-control'
    )
    assert not rejected.is_displayed()  # no controls for a rejected device

    summary = button(page, ".device-control > summary")
    assert summary.accessible_name == f"Control Push Device {SN}"
    summary.click()
    wait_until(lambda: button(page, ".device-commands-empty").is_displayed(), message="empty")

    button(page, "button[data-command=reboot]").click()
    wait_until(
        lambda: commands_shown(page)[:1] == [("reboot", "queued", "Reboot queued")],
        message="reboot queued",
    )
    # the terminal takes it and answers: the status follows live, from the stream
    sent = getrequest(server, SN)
    assert [line for _, line in sent] == ["REBOOT"]
    wait_until(lambda: commands_shown(page)[0][1] == "sent", message="reboot sent")
    report(server, SN, {sent[0][0]: 0})
    wait_until(lambda: commands_shown(page)[0][:2] == ("reboot", "done"), message="done")

    # clear log asks first; "Keep it" queues nothing
    clear = button(page, ".clear-log")
    clear.click()
    confirm = button(page, ".confirm")
    wait_until(confirm.is_displayed, message="confirmation")
    assert clear.get_attribute("aria-expanded") == "true"
    assert "Erase every punch stored on" in confirm.text
    button(page, ".confirm-no").click()
    wait_until(lambda: not confirm.is_displayed(), message="confirmation closed")
    code, page_json = server.api("GET", f"/api/commands?device_id={device['id']}")
    assert [c["type"] for c in page_json["items"]] == ["reboot"]
    clear.click()
    wait_until(confirm.is_displayed, message="confirmation again")
    button(page, ".confirm-yes").click()
    wait_until(lambda: commands_shown(page)[0][:2] == ("clear_log", "queued"), message="clear")

    button(page, "button[data-command=sync_time]").click()
    wait_until(lambda: commands_shown(page)[0][0] == "sync_time", message="sync_time")
    button(page, "button[data-command=open_door]").click()
    wait_until(lambda: commands_shown(page)[0][0] == "open_door", message="open_door")
    code, page_json = server.api("GET", f"/api/commands?device_id={device['id']}")
    queued = {c["type"]: c for c in page_json["items"]}
    assert queued["clear_log"]["confirm"] is True
    lines = dict(getrequest(server, SN))
    assert set(lines.values()) >= {"CLEAR LOG", "AC_UNLOCK"}
    report(
        server,
        SN,
        {
            queued["clear_log"]["id"]: 0,
            queued["sync_time"]["id"]: 0,
            queued["open_door"]["id"]: -1002,
        },
    )
    wait_until(
        lambda: (
            ("open_door", "failed", "Open door failed not supported by this terminal")
            in commands_shown(page)
        ),
        message="open door failed",
    )
    wait_until(
        lambda: (
            [c[:2] for c in commands_shown(page)[1:3]]
            == [("sync_time", "done"), ("clear_log", "done")]
        ),
        message="done",
    )

    # a command queued elsewhere (API, CLI) shows up too
    server.api("POST", f"/api/devices/{device['id']}/commands", {"type": "info"})
    wait_until(lambda: commands_shown(page)[0][:2] == ("info", "queued"), message="info")
    assert len(commands_shown(page)) == 5  # the five most recent
    assert [m for m in console_errors(page) if "/api/session" not in m] == []
