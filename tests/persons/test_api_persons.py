"""The person API's rules and the sync's edge cases, on real sockets and both databases:
field errors, duplicates, a pull terminal's 28-byte layout, deactivation and device-list
changes, templates a terminal cannot take, import from a terminal, a restart mid-sync."""

from __future__ import annotations

import base64

import pytest_twisted
from twisted.internet import reactor

from tests.harness import start_server
from tests.persons.conftest import Site
from zkserver.emulator.pull import PullTCPFactory, build_device
from zkserver.pull.codec import Template
from zkserver.records import DeviceUser

B64 = base64.b64encode(bytes(range(100))).decode()


@pytest_twisted.ensureDeferred
async def test_validation_names_the_field_and_the_device(site: Site):
    api = site.server.api
    await site.add_pull()
    await site.server.store.update_device(site.pull_id, info={"user_layout": 28})
    code, body = await api("POST", "/api/persons", {"user_id": "A7", "name": "Al"})
    assert code == 400 and body["field"] == "user_id" and body["device_id"] == site.pull_id
    assert "28-byte" in body["detail"] and "numeric PIN" in body["detail"]
    code, body = await api("POST", "/api/persons", {"user_id": "7", "name": "Too Long Name"})
    assert (code, body["field"], body["device_id"]) == (400, "name", site.pull_id)
    # not a target: the same person on another terminal only is fine
    await site.add_push()
    code, body = await api(
        "POST",
        "/api/persons",
        {"user_id": "A7", "name": "Too Long Name", "devices": [site.push_id]},
    )
    assert code == 201, body
    for bad, field in (
        ({"user_id": "8", "privilege": 1}, "privilege"),
        ({"user_id": "8", "name": "a\tb"}, "name"),
        ({"user_id": "8", "devices": ["nope"]}, "devices"),
        ({"user_id": "x y"}, "user_id"),
    ):
        code, body = await api("POST", "/api/persons", bad)
        assert (code, body["field"]) == (400, field), body
    code, body = await api("POST", "/api/persons", {"user_id": "A7"})
    assert (code, body["field"]) == (409, "user_id")
    code, body = await api("PATCH", "/api/persons/A7", {"devices": "all"})
    assert (code, body["field"]) == (400, "name")  # would have to fit the pull terminal
    code, body = await api("PATCH", "/api/persons/A7", {"user_id": "B7"})
    assert (code, body["field"]) == (400, "user_id")
    assert (await api("GET", "/api/persons/nobody"))[0] == 404
    assert (await api("PATCH", "/api/persons/nobody", {"name": "x"}))[0] == 404
    _, page = await api("GET", "/api/persons?q=long")
    assert [p["user_id"] for p in page["items"]] == ["A7"]
    assert "password" not in page["items"][0]


@pytest_twisted.ensureDeferred
async def test_deactivate_and_device_list_changes_delete_there(site: Site):
    api = site.server.api
    push = await site.add_push()
    pull = await site.add_pull()
    code, _ = await api("POST", "/api/persons", {"user_id": "40", "name": "Dee"})
    assert code == 201
    await site.in_step("40", site.push_id, site.pull_id)
    code, _ = await api("PATCH", "/api/persons/40", {"devices": [site.push_id]})
    assert code == 200

    async def off_pull() -> bool:
        return "40" not in {u.user_id for u in pull.users}

    await site.until_async(off_pull)
    await site.in_step("40", site.push_id, site.pull_id)
    assert "40" in push.user_list
    code, _ = await api("PATCH", "/api/persons/40", {"active": False})

    async def off_push() -> bool:
        return "40" not in push.user_list

    await site.until_async(off_push)
    _, sync = await api("GET", "/api/persons/40/sync")
    assert {(d["operation"], d["state"]) for d in sync["devices"]} == {("delete", "in_step")}
    code, _ = await api("PATCH", "/api/persons/40", {"active": True, "devices": "all"})
    await site.in_step("40", site.push_id, site.pull_id)
    assert "40" in push.user_list and "40" in {u.user_id for u in pull.users}


@pytest_twisted.ensureDeferred
async def test_templates_a_terminal_cannot_take_are_skipped_with_the_reason(site: Site):
    api = site.server.api
    push = await site.add_push()
    await site.add_pull()
    await api("POST", "/api/persons", {"user_id": "50", "name": "Faye"})
    for body in (
        {"kind": "finger", "index": 2, "format": "12", "data": B64},
        {"kind": "face", "index": 0, "format": "7", "data": B64},
    ):
        code, answer = await api("POST", "/api/persons/50/templates", body)
        assert code == 201, answer
    await site.in_step("50", site.push_id, site.pull_id)
    _, sync = await api("GET", "/api/persons/50/sync")
    detail = {d["device_id"]: d["detail"] for d in sync["devices"]}
    assert "finger 2 skipped" in detail[site.pull_id], repr(sync)
    assert "version 12" in detail[site.pull_id]
    assert "face 0 skipped: template format not supported" in detail[site.pull_id]
    assert "finger 2 skipped" in detail[site.push_id]  # the push terminal has version 10
    assert ("FACE", "50", "0") in push.templates
    code, answer = await api(
        "POST",
        "/api/persons/50/templates",
        {"kind": "finger", "index": 1, "format": "x", "data": B64},
    )
    assert (code, answer["field"]) == (400, "format")
    # a second sync of a person in step queues nothing; a forced one re-sends
    _, before = await api("GET", f"/api/commands?device_id={site.push_id}&limit=1000")
    code, result = await api("POST", f"/api/devices/{site.push_id}/sync-persons")
    assert code == 200 and (result["persons"], result["queued"]) == (1, 1)
    _, after = await api("GET", f"/api/commands?device_id={site.push_id}&limit=1000")
    assert len(after["items"]) == len(before["items"]) + 2  # user + the face template
    await site.in_step("50", site.push_id)


@pytest_twisted.ensureDeferred
async def test_import_from_terminals_reports_conflicts(site: Site):
    api = site.server.api
    push = await site.add_push()
    for user in (DeviceUser("1", name="Ann"), DeviceUser("2", name="Bob")):
        await push.enroll_at_keypad(user)  # the registry has them now, from the terminal
    # the registry's 2 is not for the pull terminal (so zkserver does not write it there)
    await site.server.store.update_person(
        "2", {"name": "Robert", "devices": [site.push_id]}, "api", "2026"
    )
    pull = build_device(users=3, serial_number="IMPPULL1")  # users 1, 2, 3
    pull.templates.append(Template(uid=3, finger=4, valid=1, data=b"\x01" * 300))
    site.pull = pull
    site.factory = PullTCPFactory(pull, reactor)
    site.pull_port = reactor.listenTCP(0, site.factory, interface="127.0.0.1")
    code, device = await api(
        "POST",
        "/api/devices",
        {"kind": "pull", "host": "127.0.0.1", "port": site.pull_port.getHost().port},
    )
    site.pull_id = device["id"]
    await site.until(lambda: any(s.flags for s in pull.sessions))
    code, report = await api("POST", "/api/persons/import", {"from_device": site.pull_id})
    assert code == 200, report
    rows = {r["user_id"]: r for r in report["rows"]}
    assert rows["3"]["status"] == "imported" and report["templates"] == 1
    assert rows["2"]["status"] == "conflict" and "Robert" in rows["2"]["detail"]
    _, person = await api("GET", "/api/persons/2")
    assert person["name"] == "Robert"  # untouched
    _, templates = await api("GET", "/api/persons/3/templates")
    assert [(t["kind"], t["index"], t["format"], t["source"]) for t in templates] == [
        ("finger", 4, "10", "pull")
    ]
    _, three = await api("GET", "/api/persons/3")
    assert three["devices"] == "all" and three["origin"] == f"import:{site.pull_id}"
    code, _ = await api("POST", "/api/persons/import", {"from_device": "nope"})
    assert code == 404


@pytest_twisted.ensureDeferred
async def test_a_restart_mid_sync_resumes(site: Site, db_url: str, tmp_path):
    api = site.server.api
    push = await site.add_push()
    site.polling = False
    code, _ = await api("POST", "/api/persons", {"user_id": "66", "name": "Rae"})
    assert code == 201
    assert (await site.states("66"))[site.push_id] == "pending"
    await site.server.stop()  # the server goes away with the command still queued
    site.server = await start_server(*_same_args(site.server.args))
    push.server = site.server.push_url
    site.polling = True
    await site.in_step("66", site.push_id)
    assert push.user_list["66"].name == "Rae"
    _, commands = await site.server.api("GET", f"/api/commands?device_id={site.push_id}")
    assert [c["type"] for c in commands["items"]] == ["user_upsert"]  # sent once


def _same_args(args: list[str]) -> list[str]:
    """start_server's (db, data_dir, *extra) from a running server's arguments."""
    db = args[args.index("--db") + 1]
    data_dir = args[args.index("--data-dir") + 1]
    extra = args[args.index("--web") + 2 :]
    return [db, data_dir, *extra]


@pytest_twisted.ensureDeferred
async def test_enrolled_persons_origin_keeps_them_on_that_terminal(db_url: str, tmp_path):
    server = await start_server(
        db_url,
        str(tmp_path / "data"),
        "--auto-approve",
        "--no-pull",
        "--enrolled-persons",
        "origin",
        "--person-sync-interval",
        "0.1",
    )
    site = Site(server)
    try:
        push = await site.add_push("ORIGIN01")
        other = await Site(server).add_push("ORIGIN02")
        await push.enroll_at_keypad(DeviceUser("5", name="Only Here"))
        _, person = await server.api("GET", "/api/persons/5")
        assert person["devices"] == [site.push_id] and person["origin"] == site.push_id
        await site.in_step("5", site.push_id)
        states = await site.states("5")
        assert list(states) == [site.push_id]  # nothing queued for ORIGIN02
        await other.poll()
        assert "5" not in other.user_list
        await other.close()
    finally:
        await site.close()
