"""The People view in a real headless Chromium: add a person, watch their state on the
terminal turn from pending to in step live (user_sync events), see a field error named,
the registry's name on a punch that came without one, and remove them everywhere after
one confirmation; usable at phone width."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from tests.commands.test_commands_restart import getrequest
from tests.web.browser import (
    BROWSER_TEST_MARKS,
    ServerProcess,
    console_errors,
    feed_rows,
    fresh_page,
    handshake,
    login,
    now_text,
    set_viewport,
    upload_attlog,
    wait_live,
    wait_until,
)
from tests.web.test_page_commands import report

pytestmark = BROWSER_TEST_MARKS

SN = "PPLPAGE001"
PERSON = '#people li[data-user-id="700"]'


@pytest.fixture
def server(start_monitor: Callable[..., ServerProcess]) -> ServerProcess:
    return start_monitor("--auto-approve", "--no-pull")


def person_state(page: WebDriver) -> tuple[str, str]:
    found = page.find_elements(By.CSS_SELECTOR, PERSON)
    if not found:
        return ("", "")
    summary = found[0].find_element(By.CSS_SELECTOR, ".sync-summary").text
    return (found[0].get_attribute("data-state") or "", summary)


def test_add_a_person_and_watch_them_reach_the_terminal(
    driver: WebDriver, server: ServerProcess
) -> None:
    page = fresh_page(driver, 1280, 900)
    assert handshake(server, SN)[0] == 200
    login(page, server)
    wait_live(page)
    wait_until(
        lambda: page.find_elements(By.CSS_SELECTOR, f'#devices li[data-serial="{SN}"]'),
        message="device card",
    )

    add = page.find_element(By.ID, "person-add")
    assert add.accessible_name == "Add person"
    add.click()
    form = page.find_element(By.ID, "person-form")
    wait_until(form.is_displayed, message="form")
    assert add.get_attribute("aria-expanded") == "true"
    pin = page.find_element(By.ID, "pf-user_id")
    assert page.switch_to.active_element == pin  # focus moves into the form
    assert pin.accessible_name == "PIN"
    pin.send_keys("700")
    page.find_element(By.ID, "pf-name").send_keys("Page Person")
    page.find_element(By.ID, "pf-card").send_keys("31337")
    page.find_element(By.ID, "person-save").click()
    wait_until(lambda: person_state(page)[0] == "pending", message="pending")
    assert person_state(page)[1] == "1 pending"
    assert not form.is_displayed()

    # the terminal takes the command and answers: the state follows live
    sent = getrequest(server, SN)
    assert [line.split("\t")[0] for _, line in sent] == ["DATA UPDATE USERINFO PIN=700"]
    report(server, SN, {sent[0][0]: 0})
    wait_until(lambda: person_state(page) == ("in_step", "In step on 1"), message="in step")
    card = page.find_element(By.CSS_SELECTOR, PERSON)
    card.find_element(By.CSS_SELECTOR, ".person-sync > summary").click()
    entry = card.find_element(By.CSS_SELECTOR, ".sync-entry")
    assert entry.get_attribute("data-state") == "in_step" and "In step" in entry.text

    # a duplicate PIN: the form names the field
    add.click()
    pin = page.find_element(By.ID, "pf-user_id")
    pin.send_keys("700")
    pin.send_keys(Keys.ENTER)
    wait_until(lambda: pin.get_attribute("aria-invalid") == "true", message="field error")
    assert "exists" in page.find_element(By.ID, "pf-user_id-error").text
    page.find_element(By.ID, "pf-name").send_keys(Keys.ESCAPE)
    wait_until(lambda: not form.is_displayed(), message="form closed by Escape")

    # a punch without a name: the feed shows the registry's
    stamp = now_text(-5)
    assert upload_attlog(server, SN, f"700\t{stamp}\t0\t1\t0\t0\t0".encode())[0] == 200
    wait_until(
        lambda: any("Page Person" in r["text"] for r in feed_rows(page)),
        message="registry name in the feed",
    )

    # phone width: nothing wider than the screen
    set_viewport(page, 390, 844)
    wait_until(
        lambda: page.execute_script(
            "return document.documentElement.scrollWidth <= window.innerWidth"
        ),
        message="fits",
    )
    set_viewport(page, 1280, 900)

    # remove everywhere, after one confirmation
    card = page.find_element(By.CSS_SELECTOR, PERSON)
    remove = card.find_element(By.CSS_SELECTOR, ".person-remove")
    remove.click()
    confirm = card.find_element(By.CSS_SELECTOR, ".person-confirm")
    wait_until(confirm.is_displayed, message="confirmation")
    assert "every terminal" in confirm.text
    confirm.find_element(By.CSS_SELECTOR, ".confirm-yes").click()
    wait_until(lambda: not page.find_elements(By.CSS_SELECTOR, PERSON), message="removed")
    sent = getrequest(server, SN)
    assert [line for _, line in sent] == ["DATA DELETE USERINFO PIN=700"]
    # the only failed request is the duplicate PIN's 409, answered on the form
    assert [
        m for m in console_errors(page) if "/api/session" not in m and "(Conflict)" not in m
    ] == []
