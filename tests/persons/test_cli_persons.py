"""``zkserver persons ...`` as a real subprocess against a real server (both databases),
with an emulated push terminal taking what the registry sends."""

from __future__ import annotations

import json

import pytest_twisted
from twisted.internet import reactor

from tests.harness import RunningServer, sleep
from tests.test_cli import assert_one_line_error, remote, run_cli
from zkserver.emulator.push import PushTerminal


@pytest_twisted.ensureDeferred
async def test_persons_from_the_console(server: RunningServer, tmp_path) -> None:
    terminal = PushTerminal(server.push_url, "CLIPPL1", reactor, users=0)
    await terminal.handshake()
    await terminal.poll()
    try:
        cli = [*remote(server), "persons"]
        out, err, code = await run_cli(
            *cli, "add", "12", "name=Ann Lee", "card=77", "devices=CLIPPL1"
        )
        assert (code, out.strip()) == (0, "added 12 (Ann Lee)"), err
        out, err, code = await run_cli(*cli, "add", "12", "name=Again")
        assert code == 1
        assert_one_line_error(err, "(409)")
        out, err, code = await run_cli(*cli, "add", "13", "privilege=3")
        assert code == 1
        assert_one_line_error(err, "privilege: privilege must be 0")
        for _ in range(100):
            await terminal.poll()
            if "12" in terminal.user_list:
                break
            await sleep(0.05)
        assert terminal.user_list["12"].name == "Ann Lee"
        out, err, code = await run_cli(*cli, "edit", "12", "name=Ann B")
        assert code == 0, err
        out, err, code = await run_cli(*cli, "list", "--search", "ann")
        assert code == 0, err
        lines = out.strip().splitlines()
        assert lines[0].split()[:2] == ["PIN", "NAME"] and lines[1].split()[:3] == [
            "12",
            "Ann",
            "B",
        ]
        out, err, code = await run_cli(*remote(server), "--json", "persons", "show", "12")
        shown = json.loads(out)
        assert shown["name"] == "Ann B" and shown["sync"][0]["operation"] == "upsert"
        csv_file = tmp_path / "people.csv"
        csv_file.write_text("user_id,name,privilege\n20,Cy,0\n21,Di,9\n")
        out, err, code = await run_cli(*cli, "import", "--csv", str(csv_file))
        assert code == 1 and "nothing applied" in out and "row 3: privilege" in out
        out, err, code = await run_cli(*cli, "import", "--csv", str(csv_file), "--partial")
        assert code == 1 and "added 1, changed 0" in out
        out, err, code = await run_cli(*cli, "export")
        assert code == 0 and out.splitlines()[0] == (
            "user_id,name,card,privilege,group,devices,active"
        )
        assert [line.split(",")[0] for line in out.splitlines()[1:]] == ["12", "20"]
        out, err, code = await run_cli(*cli, "sync", "--device", "CLIPPL1")
        assert code == 0 and out.startswith("2 persons: 2 queued"), (out, err)
        out, err, code = await run_cli(*cli, "remove", "12")
        assert code == 2 and "--yes" in err
        out, err, code = await run_cli(*cli, "remove", "12", "--yes")
        assert code == 0 and out.startswith("removed 12"), err
    finally:
        await terminal.close()
