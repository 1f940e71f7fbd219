"""The push listener over real sockets: the ADMS conversation a terminal has with us."""

from __future__ import annotations

from io import BytesIO

import pytest_twisted
import treq
from twisted.internet import reactor
from twisted.web.client import Agent, FileBodyProducer
from twisted.web.http import stringToDatetime
from twisted.web.http_headers import Headers

from tests.harness import RunningServer, SSEClient

SN = "PYA8252300166"


async def call(server: RunningServer, method: str, path: str, body: bytes | None = None):
    """A terminal's request through a plain Agent (no content decoding, headers as sent)."""
    agent = Agent(reactor, pool=server.pool)
    producer = FileBodyProducer(BytesIO(body)) if body is not None else None
    response = await agent.request(
        method.encode(),
        (server.push_url + path).encode(),
        Headers({b"User-Agent": [b"iClock Proxy/1.09"]}),
        producer,
    )
    return response, await treq.content(response)


@pytest_twisted.ensureDeferred
async def test_handshake_sends_the_option_block_with_date_and_length(server: RunningServer):
    response, body = await call(
        server, "GET", f"/iclock/cdata?SN={SN}&options=all&pushver=2.4.1&language=69"
    )
    text = body.decode()
    assert response.code == 200
    assert text.splitlines()[0] == f"GET OPTION FROM: {SN}"
    for key in (
        "ErrorDelay=30",
        "Delay=10",
        "Realtime=1",
        "Encrypt=",
        "ServerVer=",
        "ATTLOGStamp=",
        "OPERLOGStamp=",
        "TimeZone=",
    ):
        assert key in text, key
    trans_flag = next(line for line in text.splitlines() if line.startswith("TransFlag="))
    tables = trans_flag.split("=", 1)[1].removeprefix("TransData ")
    assert tables.split("\t")[:3] == ["AttLog", "OpLog", "AttPhoto"]
    assert response.length == len(body)  # from Content-Length, so not chunked
    date = response.headers.getRawHeaders(b"date")[0]
    assert stringToDatetime(date) > 0


@pytest_twisted.ensureDeferred
async def test_device_timezone_is_used_in_the_handshake(server: RunningServer):
    code, device = await server.api(
        "POST", "/api/devices", {"serial_number": "TZDEV1", "timezone": "Asia/Kolkata"}
    )
    assert code == 201
    _, body = await call(server, "GET", "/iclock/cdata?SN=TZDEV1&options=all&pushver=2.4.1")
    assert "TimeZone=330" in body.decode().splitlines()


@pytest_twisted.ensureDeferred
async def test_a_stored_zone_this_machine_does_not_know_falls_back_as_ingest_does(db_url, tmp_path):
    # A device row whose zone names no zone here (written by an older version, or a name
    # this machine's tzdata no longer has): its punches are read in --timezone, so the
    # terminal is told that zone too. The handshake, rtdata and the 3.x push settings were
    # a 503 for ever (the terminal never came online).
    from tests.harness import start_server

    running = await start_server(
        db_url, str(tmp_path / "d"), "--auto-approve", "--timezone", "Asia/Kathmandu"
    )
    try:
        code, device = await running.api("POST", "/api/devices", {"serial_number": "OLDTZ1"})
        assert code == 201
        await running.store.update_device(device["id"], timezone="Mars/Olympus")
        response, body = await call(running, "GET", "/iclock/cdata?SN=OLDTZ1&options=all")
        assert response.code == 200 and "TimeZone=345" in body.decode().splitlines(), body
        response, body = await call(running, "GET", "/iclock/rtdata?SN=OLDTZ1&type=time")
        assert response.code == 200 and body.decode().endswith(",ServerTZ=+0545"), body
        response, body = await call(running, "POST", "/iclock/push?SN=OLDTZ1", b"")
        assert response.code == 200 and "TimeZone=345" in body.decode().splitlines(), body
        line = b"1\t2026-06-01 12:00:00\t0\t1\t0\t0\t0"
        _, reply = await call(running, "POST", "/iclock/cdata?SN=OLDTZ1&table=ATTLOG", line)
        assert reply == b"OK: 1"
        _, page = await running.api("GET", "/api/attendance")
        assert [r["timestamp_utc"] for r in page["items"]] == ["2026-06-01T06:15:00Z"]
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_attlog_upload_counts_only_saved_lines_and_keeps_the_rest(server: RunningServer):
    lines = [
        "1001\t2025-10-09 18:30:45\t0\t15\t0\t0\t0",
        "1002\t2025-10-09 18:31:00\t1\t1\t0\t0\t0\t0\t36.5\t97.7\t+28800\t",
        "1003 2025-10-09 18:32:00 0 4 0 0 0",
        "1004\t2025-02-30 10:00:00\t0\t1\t0\t0\t0",
        "1005\tnot-a-time\t0\t1",
        "\x00\x01\x02garbage",
    ]
    body = "\r\n".join(lines).encode()
    response, reply = await call(
        server, "POST", f"/iclock/cdata?SN={SN}&table=ATTLOG&Stamp=1", body
    )
    assert response.code == 200
    assert reply == b"OK: 3"
    code, page = await server.api("GET", "/api/attendance")
    assert code == 200
    assert sorted(row["user_id"] for row in page["items"]) == ["1001", "1002", "1003"]
    code, rejected = await server.api("GET", f"/api/rejected?serial_number={SN}")
    assert code == 200
    assert len(rejected) == 3
    assert all(r["reason"] for r in rejected)
    assert any("2025-02-30" in r["raw"] for r in rejected)


@pytest_twisted.ensureDeferred
async def test_resent_batch_inserts_and_broadcasts_nothing_new(server: RunningServer):
    url = f"{server.web_url}/devices/events?token={server.token}&type=attendance"
    client = await SSEClient(url).connect()
    try:
        body = b"2001\t2025-10-09 08:00:00\t0\t1\t0\t0\t0\n2002\t2025-10-09 08:01:00\t0\t1\t0\t0\t0"
        path = f"/iclock/cdata?SN={SN}&table=ATTLOG"
        first, _ = await call(server, "POST", path, body)
        await client.wait_for(2)
        again, reply = await call(server, "POST", path, body)
        assert reply == b"OK: 2"
        marker = b"2003\t2025-10-09 08:02:00\t0\t1\t0\t0\t0"
        await call(server, "POST", path, marker)
        await client.wait_for(3)
        assert [e["user_id"] for e in client.events] == ["2001", "2002", "2003"]
        _, page = await server.api("GET", "/api/attendance")
        assert len(page["items"]) == 3
    finally:
        await client.close()


@pytest_twisted.ensureDeferred
async def test_missing_or_bad_serial_number_is_400(server: RunningServer):
    response, body = await call(server, "GET", "/iclock/cdata?options=all")
    assert response.code == 400 and b"SN" in body
    response, _ = await call(server, "GET", "/iclock/cdata?SN=%00%01bad&options=all")
    assert response.code == 400


@pytest_twisted.ensureDeferred
async def test_oversize_body_is_413_and_nothing_is_saved(db_url, tmp_path):
    from tests.harness import start_server

    running = await start_server(
        db_url, str(tmp_path / "d"), "--auto-approve", "--max-body", "1000"
    )
    try:
        body = b"".join(f"{i}\t2025-10-09 08:00:00\t0\t1\t0\t0\t0\n".encode() for i in range(100))
        response, reply = await call(running, "POST", f"/iclock/cdata?SN={SN}&table=ATTLOG", body)
        assert response.code == 413
        _, page = await running.api("GET", "/api/attendance")
        assert page["items"] == []
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_huge_line_and_binary_junk_never_break_the_batch(server: RunningServer):
    good = b"3001\t2025-10-09 09:00:00\t0\t1\t0\t0\t0"
    junk = bytes(range(256)) * 4
    huge = b"9" * (10 * 1024 * 1024)
    body = b"\n".join([good, junk, huge])
    response, reply = await call(server, "POST", f"/iclock/cdata?SN={SN}&table=ATTLOG", body)
    assert response.code == 200 and reply == b"OK: 1"
    _, rejected = await server.api("GET", "/api/rejected")
    assert len(rejected) >= 2
    assert all(len(r["raw"]) < 200_000 for r in rejected)
    # The server is still alive and answering.
    response, _ = await call(server, "GET", f"/iclock/ping?SN={SN}")
    assert response.code == 200


@pytest_twisted.ensureDeferred
async def test_unknown_table_is_ok_and_kept_raw(server: RunningServer):
    response, reply = await call(
        server, "POST", f"/iclock/cdata?SN={SN}&table=WEIRD", b"something new"
    )
    assert response.code == 200 and reply == b"OK"
    _, rejected = await server.api("GET", "/api/rejected")
    assert any(r["raw"] == "something new" and "WEIRD" in r["reason"] for r in rejected)


@pytest_twisted.ensureDeferred
async def test_operlog_users_build_the_user_list_with_gbk_names(server: RunningServer):
    body = (
        b"USER PIN=1\tName=Ann\tPri=0\tPasswd=\tCard=[15CD5B07]\tGrp=1\tTZ=0\n"
        b"OPLOG 4\t0\t2025-10-09 08:00:00\t0\t0\t0\t0\n"
    ) + "USER PIN=2\tName=张伟\tPri=14\tPasswd=\tCard=\tGrp=1\tTZ=0\n".encode("gbk")
    response, reply = await call(server, "POST", f"/iclock/cdata?SN={SN}&table=OPERLOG", body)
    assert response.code == 200 and reply == b"OK: 3"
    _, devices = await server.api("GET", "/api/devices")
    device_id = next(d["id"] for d in devices if d["serial_number"] == SN)
    _, users = await server.api("GET", f"/api/devices/{device_id}/users")
    names = {u["user_id"]: u["name"] for u in users}
    assert names == {"1": "Ann", "2": "张伟"}


@pytest_twisted.ensureDeferred
async def test_attendance_photo_is_stored_and_linked_to_its_punch(server: RunningServer):
    jpeg = b"\xff\xd8\xff\xe0" + b"photo-bytes" * 50 + b"\xff\xd9"
    await call(
        server,
        "POST",
        f"/iclock/cdata?SN={SN}&table=ATTLOG",
        b"4001\t2025-10-09 07:15:30\t0\t15\t0\t0\t0",
    )
    header = f"PIN=20251009071530-4001.jpg\nSN={SN}\nsize={len(jpeg)}\nCMD=uploadphoto\x00"
    response, reply = await call(
        server, "POST", f"/iclock/cdata?SN={SN}&table=ATTPHOTO", header.encode() + jpeg
    )
    assert response.code == 200 and reply == b"OK"
    _, page = await server.api("GET", "/api/attendance?user_id=4001")
    photo_id = page["items"][0]["photo_id"]
    assert photo_id
    response = await treq.get(
        f"{server.web_url}/api/photos/{photo_id}", headers=server.auth, pool=server.pool
    )
    assert await response.content() == jpeg
    # The older /iclock/fdata path stores photos too.
    response, reply = await call(
        server, "POST", f"/iclock/fdata?SN={SN}", header.replace("071530", "071531").encode() + jpeg
    )
    assert reply == b"OK"


@pytest_twisted.ensureDeferred
async def test_options_and_info_are_kept_on_the_device(server: RunningServer):
    await call(
        server,
        "POST",
        f"/iclock/cdata?SN={SN}&table=options",
        b"~DeviceName=SpeedFace,FirmVer=8.0.4,IPAddress=10.0.0.5",
    )
    await call(
        server, "GET", f"/iclock/getrequest?SN={SN}&INFO=Ver%208.0.4,12,30,1500,10.0.0.5,10,7"
    )
    _, devices = await server.api("GET", "/api/devices")
    info = next(d for d in devices if d["serial_number"] == SN)["info"]
    assert info["options"]["FirmVer"] == "8.0.4"
    flat = str(info)
    assert "10.0.0.5" in flat and "1500" in flat


@pytest_twisted.ensureDeferred
async def test_command_queue_round_trip_survives_restart(db_url, tmp_path):
    from tests.harness import start_server

    data = str(tmp_path / "d")
    running = await start_server(db_url, data, "--auto-approve")
    try:
        await call(running, "GET", f"/iclock/cdata?SN={SN}&options=all")
        _, devices = await running.api("GET", "/api/devices")
        device_id = devices[0]["id"]
        code, first = await running.api(
            "POST", f"/api/devices/{device_id}/commands", {"command": "INFO"}
        )
        assert code == 201
        code, second = await running.api(
            "POST", f"/api/devices/{device_id}/commands", {"command": "DATA DELETE USERINFO PIN=7"}
        )
        assert first["id"] != second["id"]
    finally:
        await running.stop()
    running = await start_server(db_url, data, "--auto-approve")
    try:
        _, reply = await call(running, "GET", f"/iclock/getrequest?SN={SN}")
        lines = reply.decode().splitlines()
        assert lines == [f"C:{first['id']}:INFO", f"C:{second['id']}:DATA DELETE USERINFO PIN=7"]
        _, reply = await call(running, "GET", f"/iclock/getrequest?SN={SN}")
        assert reply == b"OK"
        result = (
            f"ID={first['id']}&Return=0&CMD=INFO\n~DeviceName=X\n"
            f"ID={second['id']}&Return=-10&CMD=DATA\n"
        )
        response, reply = await call(running, "POST", f"/iclock/devicecmd?SN={SN}", result.encode())
        assert reply == b"OK"
        _, commands = await running.api("GET", f"/api/devices/{device_id}/commands")
        by_id = {c["id"]: c for c in commands}
        assert by_id[first["id"]]["status"] == "done"
        assert by_id[first["id"]]["return_code"] == 0
        assert by_id[second["id"]]["status"] == "failed"
        assert by_id[second["id"]]["return_code"] == -10
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_push_listener_serves_only_iclock(server: RunningServer):
    response, _ = await call(server, "GET", "/api/devices")
    assert response.code == 404
    response, _ = await call(server, "GET", "/devices/events")
    assert response.code == 404


@pytest_twisted.ensureDeferred
async def test_ping(server: RunningServer):
    response, reply = await call(server, "GET", f"/iclock/ping?SN={SN}")
    assert (response.code, reply) == (200, b"OK")


@pytest_twisted.ensureDeferred
async def test_security_push_registry_config_and_rtlog(server: RunningServer):
    sn = "ACC0001"
    response, reply = await call(
        server,
        "POST",
        f"/iclock/registry?SN={sn}",
        b"DeviceType=acc,~DeviceName=SpeedFace-V5L,FirmVer=ZAM180",
    )
    assert response.code == 200 and reply.decode().startswith("RegistryCode=")
    response, reply = await call(server, "POST", f"/iclock/push?SN={sn}")
    config = dict(line.split("=", 1) for line in reply.decode().splitlines())
    assert config["RequestDelay"] == "10" and config["Realtime"] == "1"
    assert config["TransTables"] == "User\tTransaction"
    body = (
        "time=2025-10-09 18:30:45\tpin=1001\tcardno=0\teventaddr=1\tevent=0\t"
        "inoutstatus=1\tverifytype=15\tsitecode=0\n"
        "time=2025-10-09 18:31:00\tpin=0\tcardno=0\teventaddr=1\tevent=8\t"
        "inoutstatus=2\tverifytype=200\n"
        "time=2025-13-09 18:31:00\tpin=1002\tinoutstatus=0\tverifytype=1\n"
    )
    response, reply = await call(
        server, "POST", f"/iclock/cdata?SN={sn}&table=rtlog", body.encode()
    )
    assert (response.code, reply) == (200, b"OK: 2")
    _, page = await server.api("GET", "/api/attendance")
    (row,) = page["items"]
    assert (row["user_id"], row["timestamp"], row["action"], row["method"]) == (
        "1001",
        "2025-10-09 18:30:45",
        1,
        15,
    )
    _, rejected = await server.api("GET", f"/api/rejected?serial_number={sn}")
    assert len(rejected) == 1 and "2025-13-09" in rejected[0]["raw"]


@pytest_twisted.ensureDeferred
async def test_registry_refuses_a_device_that_is_not_approved(db_url, tmp_path):
    from tests.harness import start_server

    running = await start_server(db_url, str(tmp_path / "d"))  # no --auto-approve
    try:
        response, _ = await call(running, "POST", "/iclock/registry?SN=ACC0002", b"")
        assert response.code == 406
    finally:
        await running.stop()


@pytest_twisted.ensureDeferred
async def test_operlog_templates_are_kept_and_unknown_records_rejected(server: RunningServer):
    body = (
        b"FP PIN=1\tFID=6\tSize=8\tValid=1\tTMP=QUJDREVGR0g=\n"
        b"GARBAGE PIN=1\tX=2\n"
        b"USER PIN=1\tName=Ann\tPri=0\tPasswd=\tCard=\tGrp=1\tTZ=0\n"
    )
    path = f"/iclock/cdata?SN={SN}&table=OPERLOG"
    response, reply = await call(server, "POST", path, body)
    assert (response.code, reply) == (200, b"OK: 2")
    response, reply = await call(server, "POST", path, body)  # resent: stored once
    assert reply == b"OK: 2"
    _, rejected = await server.api("GET", f"/api/rejected?serial_number={SN}")
    assert [r["raw"] for r in rejected] == ["GARBAGE PIN=1\tX=2", "GARBAGE PIN=1\tX=2"]
    _, devices = await server.api("GET", "/api/devices")
    device_id = next(d["id"] for d in devices if d["serial_number"] == SN)
    rows = await server.store._run(_operlog_rows(device_id), write=False)
    assert [(r[0], r[1], r[2]) for r in rows] == [("FP", "1", "6")]


def _operlog_rows(device_id: str):
    from zkserver.store.dialect import Q

    rows = yield Q("SELECT op, operator, obj, raw FROM operlog WHERE device_id = %s", (device_id,))
    return rows


@pytest_twisted.ensureDeferred
async def test_options_upload_is_kept_printable_and_bounded(server: RunningServer):
    junk = bytes(range(256)) * 40
    response, reply = await call(
        server, "POST", f"/iclock/cdata?SN={SN}&table=options", junk + b",FirmVer=8.0.4,Good=yes"
    )
    assert (response.code, reply) == (200, b"OK")
    _, devices = await server.api("GET", "/api/devices")
    options = next(d for d in devices if d["serial_number"] == SN)["info"]["options"]
    assert options["FirmVer"] == "8.0.4" and options["Good"] == "yes"
    assert all(ord(ch) >= 0x20 for item in options.items() for text in item for ch in text)
    assert all(len(v) <= 256 for v in options.values())


@pytest_twisted.ensureDeferred
async def test_rtstate_updates_the_device_instead_of_piling_up(server: RunningServer):
    for door in ("1", "0"):
        body = f"time=2025-10-09 18:31:00\tsensor=01\trelay=0{door}\talarm=0000".encode()
        response, reply = await call(server, "POST", "/iclock/cdata?SN=ACC9&table=rtstate", body)
        assert (response.code, reply) == (200, b"OK")
    _, devices = await server.api("GET", "/api/devices")
    info = next(d for d in devices if d["serial_number"] == "ACC9")["info"]
    assert info["rtstate"]["relay"] == "00"
    _, rejected = await server.api("GET", "/api/rejected?serial_number=ACC9")
    assert rejected == []


@pytest_twisted.ensureDeferred
async def test_a_cp1252_terminal_names_are_read_and_written_in_cp1252(server: RunningServer):
    """docs/protocols.md §A.2: a Western European terminal sends Müller as cp1252 bytes,
    which are valid GBK too: only the device's encoding reads them right."""
    code, device = await server.api(
        "POST", "/api/devices", {"serial_number": "CP1252DEV", "encoding": "windows-1252"}
    )
    assert code == 201 and device["encoding"] == "cp1252", device
    body = (
        "USER PIN=7\tName=Müller\tPri=0\tPasswd=\tCard=\tGrp=1\n"
        "USER PIN=8\tName=François\tPri=0\tPasswd=\tCard=\tGrp=1\n"
    ).encode("cp1252") + b"USER PIN=9\tName=M\x81ller\tPri=0\n"  # 0x81: no cp1252 character
    response, reply = await call(server, "POST", "/iclock/cdata?SN=CP1252DEV&table=OPERLOG", body)
    assert response.code == 200 and reply == b"OK: 2"
    _, users = await server.api("GET", f"/api/devices/{device['id']}/users")
    assert {u["user_id"]: u["name"] for u in users} == {"7": "Müller", "8": "François"}
    _, rejected = await server.api("GET", "/api/rejected")
    assert any(r["raw"].startswith("USER PIN=9\tName=M\x81ller") for r in rejected)
    # the server writes names to it in cp1252 too; one it cannot hold is refused
    code, command = await server.api(
        "POST",
        f"/api/devices/{device['id']}/commands",
        {"type": "user_upsert", "user_id": "10", "name": "Jürgen Groß"},
    )
    assert code == 201, command
    code, bad = await server.api(
        "POST",
        f"/api/devices/{device['id']}/commands",
        {"type": "user_upsert", "user_id": "11", "name": "张三"},
    )
    assert code == 400 and bad["field"] == "name" and "cp1252" in bad["detail"], bad
    response, reply = await call(server, "GET", "/iclock/getrequest?SN=CP1252DEV")
    assert "Name=Jürgen Groß\t".encode("cp1252") in reply, reply
    assert response.headers.getRawHeaders(b"content-type") == [b"text/plain"]
