"""``GET /metrics``: scraped and parsed with prometheus-client's own parser."""

from __future__ import annotations

import pytest_twisted
import treq
from prometheus_client.parser import text_string_to_metric_families

from tests.harness import RunningServer, SSEClient, start_server
from zkserver.metrics import FAMILIES


async def scrape(server: RunningServer, token: bool = True) -> tuple[int, dict]:
    headers = server.auth if token else {}
    response = await treq.get(f"{server.web_url}/metrics", headers=headers, pool=server.pool)
    text = await response.text("utf-8")
    if response.code != 200:
        return response.code, {}
    assert response.headers.getRawHeaders("content-type")[0].startswith("text/plain")
    samples: dict = {}
    names = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    assert names == set(FAMILIES)  # exactly the families of the issue, nothing else
    return 200, samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest_twisted.ensureDeferred
async def test_metrics_families_and_values(server: RunningServer):
    code, _ = await scrape(server, token=False)
    assert code == 401
    _, before = await scrape(server)
    client = await SSEClient(f"{server.web_url}/devices/events?token={server.token}").connect()
    try:
        response = await treq.post(
            f"{server.push_url}/iclock/cdata?SN=METRIC01&table=ATTLOG",
            data=b"1\t2026-11-29 10:00:00\t0\t1\t0\t0\t0\n2\t2026-11-29 10:00:01\t0\t1\t0\t0\t0",
            pool=server.pool,
        )
        assert await response.content() == b"OK: 2"
        await client.wait_for(2)
        _, after = await scrape(server)
    finally:
        await client.close()
    assert value(after, "zkserver_sse_clients") == 1
    diff = lambda name, **labels: value(after, name, **labels) - value(before, name, **labels)  # noqa: E731
    assert diff("zkserver_punches_saved_total", kind="push") == 2
    assert diff("zkserver_events_published_total", type="attendance") == 2
    assert diff("zkserver_sse_deliveries_total") >= 2
    assert diff("zkserver_ingest_commit_seconds_count") >= 1
    assert diff("zkserver_fanout_round_seconds_count") >= 1
    assert value(after, "zkserver_device_alerts_open") == 0


@pytest_twisted.ensureDeferred
async def test_metrics_public(db_url: str, tmp_path):
    server = await start_server(db_url, str(tmp_path / "d"), "--metrics-public")
    try:
        code, samples = await scrape(server, token=False)
        assert code == 200 and ("zkserver_sse_clients", ()) in samples
    finally:
        await server.stop()
