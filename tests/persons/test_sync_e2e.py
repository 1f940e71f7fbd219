"""The person registry end to end on real sockets (SQLite and PostgreSQL): the API, the
sync service, an emulated push terminal and an emulated pull terminal read back with
unmodified pyzk 0.9."""

from __future__ import annotations

import base64
from typing import Any

import pytest_twisted

from tests.harness import SSEClient, sleep
from tests.persons.conftest import Site
from zkserver.records import DeviceUser

FINGER = bytes(range(256)) * 3


@pytest_twisted.ensureDeferred
async def test_a_person_for_all_devices_reaches_both_terminals_and_leaves_them(site: Site):
    api = site.server.api
    push = await site.add_push()
    pull = await site.add_pull()
    dashboard = await SSEClient(
        f"{site.server.web_url}/devices/events?token={site.server.token}&type=user_sync"
    ).connect()
    code, person = await api(
        "POST",
        "/api/persons",
        {
            "user_id": "501",
            "name": "Ann Lee",
            "card": "4242",
            "privilege": 0,
            "password": "123",
            "devices": "all",
        },
    )
    assert code == 201, person
    assert "password" not in person and person["has_password"] is True
    code, template = await api(
        "POST",
        "/api/persons/501/templates",
        {
            "kind": "finger",
            "index": 3,
            "format": "10",
            "data": base64.b64encode(FINGER).decode(),
        },
    )
    assert code == 201, template
    await site.in_step("501", site.push_id, site.pull_id)
    assert push.user_list["501"].name == "Ann Lee" and push.user_list["501"].card == "4242"
    assert push.templates[("FINGERTMP", "501", "3")]["TMP"] == base64.b64encode(FINGER).decode()
    assert (await site.pyzk("users"))["501"] == ("Ann Lee", 0, "4242")
    assert (await site.pyzk("templates"))[("501", 3)] == FINGER
    assert [u.user_id for u in pull.users] == ["1", "501"]

    # in step: a second sync (and the timer) queue nothing new
    _, commands_before = await api("GET", "/api/commands?limit=1000")
    await site.server.service.store.ping()
    await sleep(0.5)
    _, commands_after = await api("GET", "/api/commands?limit=1000")
    assert len(commands_after["items"]) == len(commands_before["items"])

    # events: pending then in_step for each device, operation upsert
    seen = [
        (e["device_id"], e["operation"], e["state"])
        for e in dashboard.of_type("user_sync")
        if e.get("user_id") == "501"
    ]
    for device_id in (site.push_id, site.pull_id):
        assert (device_id, "upsert", "pending") in seen
        assert (device_id, "upsert", "in_step") in seen

    # remove everywhere
    code, body = await api("DELETE", "/api/persons/501")
    assert code == 200, body

    async def gone() -> bool:
        states = await site.states("501")
        return (
            "501" not in push.user_list
            and len(pull.users) == 1
            and set(states.values()) == {"in_step"}
        )

    await site.until_async(gone)
    sync = (await api("GET", "/api/persons/501/sync"))[1]
    assert {d["operation"] for d in sync["devices"]} == {"delete"}
    assert "501" not in await site.pyzk("users")
    await dashboard.close()


@pytest_twisted.ensureDeferred
async def test_enrolled_at_the_push_keypad_reaches_the_pull_terminal(site: Site):
    api = site.server.api
    push = await site.add_push()
    await site.add_pull()
    await push.enroll_at_keypad(DeviceUser("77", name="Keypad Kim", group="1"), [(1, FINGER)])
    code, person = await api("GET", "/api/persons/77")
    assert code == 200 and person["name"] == "Keypad Kim"
    assert person["origin"] == site.push_id and person["origin_at"]
    assert person["devices"] == "all"
    _, templates = await api("GET", "/api/persons/77/templates")
    assert [(t["kind"], t["index"], t["format"], t["size"]) for t in templates] == [
        ("finger", 1, "10", len(FINGER))
    ]
    code, one = await api("GET", f"/api/persons/77/templates/{templates[0]['template_id']}")
    assert base64.b64decode(one["data"]) == FINGER
    await site.in_step("77", site.push_id, site.pull_id)
    assert (await site.pyzk("users"))["77"][0] == "Keypad Kim"
    assert (await site.pyzk("templates"))[("77", 1)] == FINGER

    # renamed at the keypad: last change wins, and flows on
    await push.enroll_at_keypad(DeviceUser("77", name="Kim Renamed", group="1"))
    await site.until_async(lambda: _name_is(api, "77", "Kim Renamed"))
    await site.in_step("77", site.push_id, site.pull_id)
    assert (await site.pyzk("users"))["77"][0] == "Kim Renamed"


async def _name_is(api: Any, user_id: str, name: str) -> bool:
    code, person = await api("GET", f"/api/persons/{user_id}")
    return code == 200 and person["name"] == name


@pytest_twisted.ensureDeferred
async def test_an_offline_terminal_catches_up_when_it_returns(site: Site):
    api = site.server.api
    push = await site.add_push()
    site.polling = False  # the terminal is away
    code, _ = await api("POST", "/api/persons", {"user_id": "9", "name": "Late Lou"})
    assert code == 201
    await sleep(0.3)
    assert (await site.states("9"))[site.push_id] == "pending"
    assert "9" not in push.user_list
    site.polling = True  # back: it polls and gets what it missed
    await site.in_step("9", site.push_id)
    assert push.user_list["9"].name == "Late Lou"


@pytest_twisted.ensureDeferred
async def test_csv_import_with_bad_rows(site: Site):
    api = site.server.api
    await site.add_push()
    text = (
        "user_id,name,card,privilege,group,devices,active\r\n"
        "1,Ann,,0,1,all,true\r\n"
        "2,Bob\tTab,,0,1,all,true\r\n"
        "3,Cy,,5,1,all,true\r\n"
        "4,Di,12,0,1,nope,true\r\n"
        "5,Ed,,14,,all,false\r\n"
    )
    headers = {"Content-Type": "text/csv"}
    code, body = await api("POST", "/api/persons.csv", data=text.encode(), headers=headers)
    assert code == 422, body
    assert [(e["row"], e["field"]) for e in body["errors"]] == [
        (3, "name"),
        (4, "privilege"),
        (5, "devices"),
    ]
    assert (await api("GET", "/api/persons"))[1]["items"] == []
    code, body = await api(
        "POST", "/api/persons.csv?partial=1", data=text.encode(), headers=headers
    )
    assert code == 200, body
    assert (body["added"], len(body["errors"])) == (2, 3)
    _, page = await api("GET", "/api/persons")
    assert [(p["user_id"], p["active"]) for p in page["items"]] == [("1", True), ("5", False)]
    code, exported = await api("GET", "/api/persons.csv")
    assert code == 200
    assert exported.splitlines() == [
        "user_id,name,card,privilege,group,devices,active",
        "1,Ann,,0,1,all,true",
        "5,Ed,,14,,all,false",
    ]
    await site.in_step("1", site.push_id)


@pytest_twisted.ensureDeferred
async def test_enrolled_at_the_pull_keypad_reaches_the_push_terminal(site: Site):
    import struct

    from zkserver.pull.codec import EF_ENROLLFINGER, Template

    api = site.server.api
    push = await site.add_push()
    pull = await site.add_pull()
    # at the pull terminal's keypad: a new user and a fingerprint, then the event
    pull.users.append(DeviceUser("88", name="Pat Pull", uid=88, group="1"))
    pull.templates.append(Template(uid=88, finger=6, valid=1, data=FINGER))
    data = struct.pack("<HH", 0, len(FINGER)) + b"88".ljust(9, b"\0") + bytes([6])
    pull.emit_event(int(EF_ENROLLFINGER), data)

    async def known() -> bool:
        code, person = await api("GET", "/api/persons/88")
        return code == 200

    await site.until_async(known)
    _, person = await api("GET", "/api/persons/88")
    assert person["name"] == "Pat Pull" and person["origin"] == site.pull_id
    await site.in_step("88", site.push_id, site.pull_id)
    assert push.user_list["88"].name == "Pat Pull"
    assert push.templates[("FINGERTMP", "88", "6")]["TMP"] == base64.b64encode(FINGER).decode()
