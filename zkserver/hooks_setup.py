"""Wires the webhook sender, the health alerts and the metrics into the server
(called by :func:`zkserver.tap.makeService`)."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from zkserver.alerts import AlertPolicy
from zkserver.alerts_service import AlertService
from zkserver.web.hooks_api import HooksConfig
from zkserver.webhooks.backoff import RetryPolicy
from zkserver.webhooks.service import WebhookSender, treq_poster
from zkserver.webhooks.urls import getaddrinfo_resolver

if TYPE_CHECKING:  # (zkserver.tap imports this module)
    from zkserver.tap import ZKServer

__all__ = ["OPT_FLAGS", "OPT_PARAMETERS", "HOOK_FLAG_NAMES", "HOOK_NUMBERS", "setup_hooks"]

OPT_FLAGS = [
    [
        "webhook-allow-private",
        None,
        "Allow webhook URLs on loopback, private, link-local "
        "or cloud-metadata addresses (refused by default: SSRF).",
    ],
    ["metrics-public", None, "Serve GET /metrics without the token."],
]
OPT_PARAMETERS = [
    [
        "webhook-retry-min",
        None,
        5.0,
        "Seconds before the first webhook retry (doubles, with jitter).",
    ],
    ["webhook-retry-max", None, 3600.0, "Longest wait between webhook retries, seconds."],
    [
        "webhook-give-up",
        None,
        86400.0,
        "Seconds after the first attempt when a webhook delivery is marked failed.",
    ],
    ["webhook-timeout", None, 10.0, "Seconds a webhook endpoint has to answer."],
    ["alert-silent", None, 900.0, "Seconds without contact before a device_alert (silent)."],
    ["alert-clock", None, 120.0, "Seconds of device clock offset before a device_alert (clock)."],
    ["alert-repeat", None, 21600.0, "Seconds between repeats of an open device_alert."],
    ["alert-interval", None, 30.0, "Seconds between device health checks."],
]

HOOK_FLAG_NAMES = tuple(flag[0] for flag in OPT_FLAGS)
#: (type, smallest value allowed), as zkserver.tap checks its numeric options.
HOOK_NUMBERS: dict[str, tuple[type, float]] = {
    "webhook-retry-min": (float, 0.01),
    "webhook-retry-max": (float, 0.01),
    "webhook-give-up": (float, 0.01),
    "webhook-timeout": (float, 0.1),
    "alert-silent": (float, 1),
    "alert-clock": (float, 1),
    "alert-repeat": (float, 1),
    "alert-interval": (float, 0.01),
}


def setup_hooks(
    server: ZKServer, config: Any, store: Any, ingest: Any, pull: Any, reactor: Any
) -> HooksConfig:
    ready = lambda: bool(server.ready.called)  # noqa: E731
    policy = RetryPolicy(
        retry_min=config["webhook-retry-min"],
        retry_max=config["webhook-retry-max"],
        give_up=config["webhook-give-up"],
        timeout=config["webhook-timeout"],
    )
    resolve = getaddrinfo_resolver(reactor)
    allow_private = bool(config["webhook-allow-private"])
    sender = WebhookSender(
        store=store,
        clock=reactor,
        post=treq_poster(reactor, resolve, allow_private),
        resolve=resolve,
        policy=policy,
        allow_private=bool(config["webhook-allow-private"]),
        ready=ready,
    )
    sender.setServiceParent(server)

    def measured() -> dict[str, dict[str, Any]]:
        if pull is None:
            return {}
        return {
            device_id: {"clock_offset_s": svc.clock_offset_s}
            for device_id, svc in list(pull.devices.items())
            if getattr(svc, "clock_offset_s", None) is not None
        }

    alerts = AlertService(
        store=store,
        clock=reactor,
        publish=ingest.publish,
        policy=AlertPolicy(
            silent=config["alert-silent"],
            clock=config["alert-clock"],
            repeat=config["alert-repeat"],
        ),
        interval=config["alert-interval"],
        time_policy=ingest.time_policy,
        ready=ready,
        measured=measured,
    )
    alerts.setServiceParent(server)
    server.alerts = alerts
    server.webhooks = sender

    def pull_sessions() -> dict[str, int]:
        if pull is None:
            return {}
        return dict(Counter(svc.device.status for svc in list(pull.devices.values())))

    return HooksConfig(
        sender=sender,
        resolve=resolve,
        allow_private=bool(config["webhook-allow-private"]),
        metrics_public=bool(config["metrics-public"]),
        pull_sessions=pull_sessions,
    )
