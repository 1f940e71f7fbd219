"""--fix-drift's decision (zkserver.pull.drift): threshold and at most once an hour."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from zkserver.pull.drift import DriftFixer
from zkserver.pull.service import PullDeviceService
from zkserver.records import Device


def test_off_by_default() -> None:
    assert not DriftFixer().due("d", 10_000, 0)


def test_only_beyond_the_threshold_and_once_an_hour_per_device() -> None:
    fixer = DriftFixer(threshold=30)
    assert not fixer.due("a", 30, 0)
    assert not fixer.due("a", -29, 0)
    assert fixer.due("a", -31, 0)
    assert not fixer.due("a", 500, 10)
    assert fixer.due("b", 500, 10)  # another device is not held back
    assert not fixer.due("a", 500, 3599)
    assert fixer.due("a", 500, 3600)
    fixer.forget("b")
    assert fixer.due("b", 500, 11)


# ---------------------------------------------------------------- the service, on a Clock


class FakeSession:
    def __init__(self) -> None:
        self.set_to: list[datetime] = []

    def set_time(self, when: datetime) -> Deferred[None]:
        self.set_to.append(when)
        return succeed(None)


def _service(clock: Clock, fixer: DriftFixer | None) -> PullDeviceService:
    device = Device("dev-1", "SN1", "Door", "pull", "online", True, timezone="+01:00")
    return PullDeviceService(
        device,
        store=None,
        ingest=None,
        registry=None,
        clock=clock,
        fix_drift=fixer,  # type: ignore[arg-type]
    )


def _probe(service: PullDeviceService, session: FakeSession, ahead: float) -> None:
    """One idle probe: the device answers its clock, ``ahead`` seconds fast."""
    clock = service.clock
    true_local = datetime.fromtimestamp(clock.seconds(), UTC) + timedelta(hours=1)
    device_time = (true_local + timedelta(seconds=ahead)).replace(tzinfo=None, microsecond=0)
    d = Deferred.fromCoroutine(
        service._check_drift(session, device_time, clock.seconds(), clock.seconds())  # type: ignore[arg-type]
    )
    assert d.called


def test_fix_drift_sets_the_clock_at_most_once_an_hour() -> None:
    clock = Clock()
    clock.advance(1_767_225_600)  # 2026-01-01 00:00:00 UTC
    service = _service(clock, DriftFixer(threshold=30))
    session = FakeSession()
    _probe(service, session, ahead=120)
    assert service.clock_offset_s is not None and abs(service.clock_offset_s - 120) <= 1
    assert session.set_to == [datetime(2026, 1, 1, 1, 0, 0)]  # the device's zone: +01:00
    clock.advance(60)
    _probe(service, session, ahead=-500)  # off again within the hour: left alone
    assert len(session.set_to) == 1
    clock.advance(3600)
    _probe(service, session, ahead=-500)
    assert len(session.set_to) == 2 and session.set_to[-1] == datetime(2026, 1, 1, 2, 1, 0)
    clock.advance(7200)
    _probe(service, session, ahead=20)  # within the threshold
    assert len(session.set_to) == 2


def test_without_fix_drift_the_offset_is_only_measured() -> None:
    clock = Clock()
    clock.advance(1_767_225_600)
    service = _service(clock, None)
    session = FakeSession()
    _probe(service, session, ahead=-9999)
    assert abs(service.clock_offset_s + 9999) <= 1 and session.set_to == []  # whole seconds


class ProbedSession(FakeSession):
    closed = False
    last_activity = 0.0

    def read_time(self) -> Deferred[datetime]:
        return succeed(datetime(2026, 1, 1, 1, 0, 0))


class LockingStore:
    def try_lock_device(self, key: str) -> Deferred[bool]:
        return succeed(True)


class BrokenFixer:
    def due(self, device_id: str, offset: int, now: float) -> bool:
        raise RuntimeError("boom")


def test_an_idle_probe_that_fails_runs_again_while_the_session_is_open() -> None:
    """A probe whose own step raises (here the drift fixer) is logged and the idle probe
    is scheduled again: it must not stop probing that session for good."""
    clock = Clock()
    clock.advance(1_767_225_600)
    service = _service(clock, BrokenFixer())  # type: ignore[arg-type]
    service.store = LockingStore()  # type: ignore[assignment]
    service.seen_every = 1e12  # no last_seen write in this test
    service._seen_at = clock.seconds()
    session = ProbedSession()
    session.last_activity = clock.seconds() - 10 * service.idle_probe
    service.session = session  # type: ignore[assignment]
    service.running = True
    for _ in range(3):
        service._probe()
        assert service._probe_call is not None and service._probe_call.active()
        call, service._probe_call = service._probe_call, None
        call.cancel()


def test_a_right_clock_in_the_repeated_hour_is_not_set() -> None:
    # Berlin, 2026-10-25 01:30Z: the second 02:30 of the night. The terminal's clock is
    # right; read as the first 02:30 it was an hour behind, and --fix-drift set it.
    clock = Clock()
    clock.advance(datetime(2026, 10, 25, 1, 30, tzinfo=UTC).timestamp())
    device = Device("dev-1", "SN1", "Door", "pull", "online", True, timezone="Europe/Berlin")
    service = PullDeviceService(
        device,
        store=None,
        ingest=None,
        registry=None,
        clock=clock,
        fix_drift=DriftFixer(threshold=30),  # type: ignore[arg-type]
    )
    session = FakeSession()
    d = Deferred.fromCoroutine(
        service._check_drift(
            session,  # type: ignore[arg-type]
            datetime(2026, 10, 25, 2, 30, 0),
            clock.seconds(),
            clock.seconds(),
        )
    )
    assert d.called
    assert service.clock_offset_s in (0, 1) and session.set_to == []
