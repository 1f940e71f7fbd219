"""Several zkserver processes on one PostgreSQL: a punch saved through any of them reaches
the SSE clients of all of them, once and in commit order."""

from __future__ import annotations

import pytest_twisted
import treq

from tests.databases import postgres_schema
from tests.harness import SSEClient, start_server


@pytest_twisted.ensureDeferred
async def test_events_committed_by_one_server_reach_the_clients_of_another(tmp_path):
    with postgres_schema() as url:
        first = await start_server(url, str(tmp_path / "a"), "--auto-approve", "--token", "t")
        second = await start_server(url, str(tmp_path / "b"), "--auto-approve", "--token", "t")
        clients = [
            await SSEClient(f"{s.web_url}/devices/events?token=t&type=attendance").connect()
            for s in (first, second)
        ]
        try:
            for i in range(6):
                target = (first, second)[i % 2]
                response = await treq.post(
                    f"{target.push_url}/iclock/cdata?SN=CLUSTER1&table=ATTLOG",
                    data=f"{i}\t2025-10-09 08:00:{i:02d}\t0\t1\t0\t0\t0".encode(),
                    pool=target.pool,
                )
                assert await response.content() == b"OK: 1"
            for client in clients:
                await client.wait_for(6)
            assert clients[0].ids == clients[1].ids == sorted(clients[0].ids)
            assert [e["user_id"] for e in clients[0].events] == [str(i) for i in range(6)]
            assert clients[0].events == clients[1].events
        finally:
            for client in clients:
                await client.close()
            await first.stop()
            await second.stop()
