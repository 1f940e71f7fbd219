"""The webhook sender: POSTs the outbox, in order per subscription, with retries.

Every ``poll`` seconds (and at once on :meth:`WebhookSender.wake`) it asks the store
which subscriptions have a due head-of-queue delivery and runs one worker per
subscription: take the subscription's cross-process lock (``webhook:<id>``), send its
head deliveries (one event per POST, or up to ``batch_max`` as a JSON array), record each
outcome, and stop at the first failure (that subscription's later events wait; no other
subscription, nor ingest, nor the stream, waits for it). A 429 or 503 answer's
``Retry-After`` makes that subscription wait at least as long (within the retry policy).
A delivery is recorded only after its POST ended, so a crash resends it: at least once,
the event id being the receiver's idempotency key.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from time import perf_counter
from typing import Any

from attrs import define, field, frozen
from twisted.application.service import Service
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IReactorTime, IStreamClientEndpoint
from twisted.logger import Logger
from twisted.web.iweb import IAgentEndpointFactory
from zope.interface import implementer

from zkserver import metrics
from zkserver.clock import parse_iso
from zkserver.events import encode_payload, one_line
from zkserver.store.base import Store
from zkserver.webhooks.backoff import RetryPolicy, retry_after
from zkserver.webhooks.model import DueDelivery, Webhook
from zkserver.webhooks.signing import signed_headers
from zkserver.webhooks.urls import (
    BadWebhookURL,
    Resolver,
    check_webhook_url,
    forbidden_address,
    host_address,
)

__all__ = ["Answer", "WebhookSender", "Outcome", "Poster"]

log = Logger()

MAX_WORKERS = 200
MAX_RESPONSE = 64 * 1024  # bytes of an answer that are read (and dropped)

#: The answers whose ``Retry-After`` is honoured (RFC 9110 15.6.4, RFC 6585 section 4).
RETRY_AFTER_CODES = (429, 503)


@frozen
class Answer:
    """An endpoint's answer to a POST: its status and its raw ``Retry-After``, if any."""

    code: int
    retry_after: str | None = None


Poster = Callable[[str, bytes, dict[str, str]], Awaitable[Answer]]
"""``(url, body, headers) -> Answer``: one POST (raises on a network error)."""


def iso_at(seconds: float) -> str:
    """A server time as stored (UTC ISO-8601 with microseconds, like ``utc_now()``)."""
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="microseconds")


@define
class Outcome:
    delivered: bool
    response_code: int | None = None
    error: str = ""
    #: Seconds a 429/503 answer's Retry-After asked to wait (None: not asked, or malformed).
    retry_after: float | None = None


@implementer(IStreamClientEndpoint)
@define(eq=False)
class _CheckedEndpoint:
    """Connects to an address the host resolved to only after checking it (SSRF): the
    address checked is the address connected to, so a host whose DNS answer changes
    between the check and the connection (DNS rebinding) cannot reach the inside."""

    reactor: Any
    resolve: Resolver
    scheme: str
    host: str
    port: int

    def connect(self, factory: Any) -> Deferred[Any]:
        return Deferred.fromCoroutine(self._connect(factory))

    async def _connect(self, factory: Any) -> Any:
        from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
        from twisted.internet.ssl import optionsForClientTLS

        literal = self.host.strip("[]")
        written = host_address(self.host)
        if written is not None:
            addresses = [written]
        else:
            addresses = await self.resolve(self.host, self.port)
        if not addresses:
            raise BadWebhookURL(f"host {self.host} does not resolve")
        for address in addresses:
            reason = forbidden_address(address)
            if reason is not None:
                raise BadWebhookURL(
                    f"host {self.host} ({address}) {reason}; the server refuses it unless"
                    " started with --webhook-allow-private"
                )
        address = addresses[0]
        tcp: Any
        if ":" in address:
            tcp = TCP6ClientEndpoint(self.reactor, address, self.port)
        else:
            tcp = TCP4ClientEndpoint(self.reactor, address, self.port)
        if self.scheme == "https":
            from twisted.internet.endpoints import wrapClientTLS

            tcp = wrapClientTLS(optionsForClientTLS(literal), tcp)
        return await tcp.connect(factory)


@implementer(IAgentEndpointFactory)
@define(eq=False)
class _CheckedEndpoints:
    reactor: Any
    resolve: Resolver

    def endpointForURI(self, uri: Any) -> _CheckedEndpoint:  # noqa: N802
        return _CheckedEndpoint(
            self.reactor, self.resolve, uri.scheme.decode(), uri.host.decode(), uri.port
        )


def treq_poster(
    reactor: Any, resolve: Resolver | None = None, allow_private: bool = True
) -> Poster:
    """POST with treq over a persistent pool; never follows redirects (a 3xx fails).
    Unless ``allow_private``, each connection goes to an address ``resolve`` answered
    and that was checked like the URL's host (no loopback, private, ... address)."""
    from treq import collect
    from treq.client import HTTPClient
    from twisted.web.client import Agent, HTTPConnectionPool

    pool = HTTPConnectionPool(reactor, persistent=True)
    pool.maxPersistentPerHost = 4
    if allow_private or resolve is None:
        agent = Agent(reactor, pool=pool)
    else:
        agent = Agent.usingEndpointFactory(reactor, _CheckedEndpoints(reactor, resolve), pool)
    client = HTTPClient(agent)

    async def post(url: str, body: bytes, headers: dict[str, str]) -> Answer:
        wire: dict[bytes | str, list[bytes | str]] = {k: [v] for k, v in headers.items()}
        response = await client.post(
            url,
            data=body,
            headers=wire,
            allow_redirects=False,
        )
        seen = 0

        def drop(chunk: bytes) -> None:
            nonlocal seen
            seen += len(chunk)
            if seen > MAX_RESPONSE:
                raise ValueError("answer too long")

        try:
            await collect(response, drop)
        except Exception:
            pass  # the status is what counts
        # Several Retry-After fields join into one malformed value (ignored).
        values = response.headers.getRawHeaders(b"retry-after")
        raw = b", ".join(values).decode("latin-1") if values else None
        return Answer(int(response.code), raw)

    post.pool = pool  # type: ignore[attr-defined]  # closed by WebhookSender.stop
    return post


@define(eq=False)
class WebhookSender(Service):
    store: Store
    clock: IReactorTime
    post: Poster
    resolve: Resolver
    policy: RetryPolicy = field(factory=RetryPolicy)
    allow_private: bool = False
    poll: float = 0.5
    ready: Callable[[], bool] = lambda: True
    _working: dict[int, Deferred[None]] = field(factory=dict)
    #: A timer per subscription whose head delivery backs off: it is sent again when its
    #: delay is over, not up to ``poll`` seconds later.
    _retry_calls: dict[int, IDelayedCall] = field(factory=dict)
    _call: IDelayedCall | None = None
    _ticking: bool = False
    _stopped: bool = True
    _any_active: bool = False
    _looked_at: float | None = None
    #: Seconds between looks for subscriptions while there is none (another process may
    #: add one; this process's API wakes the sender at once).
    idle_look: float = 5.0

    # --- life cycle -----------------------------------------------------------------
    def startService(self) -> None:  # noqa: N802
        super().startService()
        self._stopped = False
        self._schedule(self.poll)

    def stopService(self) -> Deferred[None]:  # noqa: N802
        super().stopService()
        self._stopped = True
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        for call in self._retry_calls.values():
            if call.active():
                call.cancel()
        self._retry_calls.clear()
        workers = list(self._working.values())
        for d in workers:
            d.cancel()
        return Deferred.fromCoroutine(self._stopped_workers(workers))

    async def _stopped_workers(self, workers: list[Deferred[None]]) -> None:
        for d in workers:
            try:
                await d
            except BaseException:
                pass
        pool = getattr(self.post, "pool", None)
        if pool is not None:
            await pool.closeCachedConnections()

    def wake(self) -> None:
        """Subscriptions changed or deliveries were made due: look at once."""
        self._looked_at = None
        if not self._stopped:
            self._schedule(0)

    def _schedule(self, delay: float) -> None:
        if self._stopped:
            return
        if self._call is not None and self._call.active():
            if delay >= self._call.getTime() - self.clock.seconds():
                return
            self._call.cancel()
        self._call = self.clock.callLater(delay, self._tick)

    def _tick(self) -> None:
        self._call = None
        d = Deferred.fromCoroutine(self._scan())
        d.addErrback(lambda f: log.failure("Looking for due webhook deliveries failed", f))
        d.addBoth(lambda _: self._schedule(self.poll))

    async def _scan(self) -> None:
        if self._ticking or not self.ready():
            return
        self._ticking = True
        try:
            now = self.clock.seconds()
            if self._looked_at is None or now - self._looked_at >= self.idle_look:
                self._any_active = any(h.active for h in await self.store.webhooks())
                self._looked_at = now
            if not self._any_active:
                return
            due = await self.store.due_webhooks(iso_at(now))
        finally:
            self._ticking = False
        for webhook_id in due:
            if webhook_id in self._working or len(self._working) >= MAX_WORKERS:
                continue
            self._start_worker(webhook_id)

    def _retry_at(self, webhook_id: int, delay: float) -> None:
        """Look at ``webhook_id`` again in ``delay`` seconds (when its backoff ends)."""
        old = self._retry_calls.pop(webhook_id, None)
        if old is not None and old.active():
            old.cancel()
        if not self._stopped:
            self._retry_calls[webhook_id] = self.clock.callLater(
                max(0.0, delay), self._retry_due, webhook_id
            )

    def _retry_due(self, webhook_id: int) -> None:
        self._retry_calls.pop(webhook_id, None)
        if self._stopped:
            return
        if webhook_id in self._working:  # the worker that failed is still finishing
            self._retry_at(webhook_id, min(self.poll, 0.1))
            return
        if len(self._working) >= MAX_WORKERS:
            self._schedule(0)
            return
        self._start_worker(webhook_id)

    def _start_worker(self, webhook_id: int) -> None:
        d = Deferred.fromCoroutine(self._work(webhook_id))
        self._working[webhook_id] = d

        def done(result: Any) -> None:
            self._working.pop(webhook_id, None)
            if hasattr(result, "check") and not result.check(CancelledError):
                log.failure("Webhook {id}: sending failed", result, id=webhook_id)

        d.addBoth(done)

    # --- one subscription -----------------------------------------------------------
    async def _lock(self, key: str) -> bool:
        return bool(await self.store.try_lock_device(key))

    async def _unlock(self, key: str) -> None:
        await self.store.unlock_device(key)

    async def _work(self, webhook_id: int) -> None:
        key = f"webhook:{webhook_id}"
        if not await self._lock(key):
            return  # another process sends this subscription now
        try:
            while not self._stopped:
                hook = await self.store.webhook(webhook_id)
                if hook is None or not hook.active:
                    return
                batch = await self.store.next_deliveries(
                    webhook_id, iso_at(self.clock.seconds()), hook.batch_max
                )
                if not batch or not await self._lock(key):
                    return
                if not await self._deliver(hook, batch):
                    return
        finally:
            if not self._stopped:  # stopping: the store's close releases it
                try:
                    await self._unlock(key)
                except Exception:
                    log.failure("Webhook {id}: releasing its lock failed", id=webhook_id)

    async def _deliver(self, hook: Webhook, batch: list[DueDelivery]) -> bool:
        """POST one batch and record the outcome; True when it was delivered."""
        # one_line: the stream's data (an event stored before separators were escaped
        # may hold them raw; Event.frame escapes them the same way).
        if hook.batch_max > 1:
            body = ("[" + ",".join(one_line(d.data) for d in batch) + "]").encode()
        else:
            batch = batch[:1]
            body = one_line(batch[0].data).encode()
        outcome = await self.attempt(hook, body, [str(d.event_id) for d in batch])
        now = self.clock.seconds()

        async def record(
            deliveries: list[DueDelivery], status: str, next_at: float, why: str = ""
        ) -> None:
            await self.store.record_attempt(
                [d.id for d in deliveries],
                at=iso_at(now),
                status=status,
                response_code=outcome.response_code,
                error=outcome.error + why,
                next_attempt_at=iso_at(next_at),
            )

        if outcome.delivered:
            metrics.WEBHOOK_DELIVERIES.labels("delivered").inc(len(batch))
            await record(batch, "delivered", now)
            return True

        def first_at(delivery: DueDelivery) -> float:
            first = parse_iso(delivery.first_attempt_at)
            return first.timestamp() if first is not None else now

        # Each delivery has its own window: the events queued behind a failing head
        # joined its batch later and are not given up with it.
        expired = [d for d in batch if self.policy.exhausted(first_at(d), now)]
        pending = [d for d in batch if not self.policy.exhausted(first_at(d), now)]
        if expired:
            metrics.WEBHOOK_DELIVERIES.labels("failed").inc(len(expired))
            log.warn(
                "Webhook {id}: giving up on events {ids} after {n} attempts",
                id=hook.id,
                ids=[d.event_id for d in expired],
                n=expired[0].attempts + 1,
            )
            await record(expired, "failed", now)
        if pending:
            backoff = self.policy.delay(pending[0].attempts + 1)
            wait = self.policy.honour(backoff, outcome.retry_after)
            if wait > backoff:
                # The receiver asked for a longer wait than the backoff: a delivery whose
                # give-up window ends before it is failed now, not retried before it asked.
                late = [d for d in pending if self.policy.exhausted(first_at(d), now + wait)]
                pending = [d for d in pending if d not in late]
                if late:
                    metrics.WEBHOOK_DELIVERIES.labels("failed").inc(len(late))
                    log.warn(
                        "Webhook {id}: giving up on events {ids}: the endpoint asked to wait"
                        " {wait:g} s, past --webhook-give-up",
                        id=hook.id,
                        ids=[d.event_id for d in late],
                        wait=wait,
                    )
                    await record(late, "failed", now, " (past --webhook-give-up)")
        if pending:
            next_at = now + wait
            metrics.WEBHOOK_DELIVERIES.labels("retry").inc(len(pending))
            await record(pending, "pending", next_at)
            self._retry_at(hook.id, next_at - self.clock.seconds())
        return False

    async def attempt(self, hook: Webhook, body: bytes, event_ids: list[str]) -> Outcome:
        """One signed POST within the timeout (SSRF-checked unless private targets are
        allowed). Never raises."""
        started = perf_counter()
        timed_out = False

        def on_timeout(result: Any, timeout: float) -> Any:
            nonlocal timed_out
            timed_out = True
            return result

        try:
            if not self.allow_private:
                await check_webhook_url(hook.url, self.resolve)
            headers = signed_headers(hook.secret, int(self.clock.seconds()), body, event_ids)
            d = Deferred.fromCoroutine(_awaited(self.post(hook.url, body, headers)))
            d.addTimeout(self.policy.timeout, self.clock, onTimeoutCancel=on_timeout)
            answer = await d
        except BadWebhookURL as e:
            return Outcome(False, None, f"url refused: {e}")
        except Exception as e:
            # The HTTP client reports a cancelled request as ResponseNeverReceived (or
            # similar), not CancelledError: the flags tell a stop and a timeout apart.
            if self._stopped:
                raise CancelledError() from e  # not an attempt: sent again after a restart
            if timed_out or isinstance(e, CancelledError):
                return Outcome(False, None, f"no answer within {self.policy.timeout:g} s")
            return Outcome(False, None, f"{type(e).__name__}: {e}"[:500])
        finally:
            metrics.WEBHOOK_ATTEMPT_SECONDS.observe(perf_counter() - started)
        code = answer.code
        if 200 <= code < 300:
            return Outcome(True, code)
        if code in RETRY_AFTER_CODES and answer.retry_after is not None:
            raw = answer.retry_after[:100]
            asked = retry_after(answer.retry_after, self.clock.seconds())
            if asked is None:
                return Outcome(False, code, f"HTTP {code}, Retry-After: {raw} (ignored)")
            return Outcome(False, code, f"HTTP {code}, Retry-After: {raw}", asked)
        return Outcome(False, code, f"HTTP {code}")

    async def ping(self, hook: Webhook) -> dict[str, Any]:
        """``POST /api/webhooks/{id}/test``: one ``ping`` event, signed the same way."""
        event_id = f"ping-{uuid.uuid4().hex[:12]}"
        payload = {
            "type": "ping",
            "webhook_id": hook.id,
            "event_id": event_id,
            "timestamp": iso_at(self.clock.seconds()),
        }
        text = encode_payload(payload)
        body = ("[" + text + "]" if hook.batch_max > 1 else text).encode()
        outcome = await self.attempt(hook, body, [event_id])
        return {
            "delivered": outcome.delivered,
            "response_code": outcome.response_code,
            "error": outcome.error,
            "event_id": event_id,
        }


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable
