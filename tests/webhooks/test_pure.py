"""Webhook pure parts: signature, URL/SSRF checks, retry schedule."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import socket

import pytest
import pytest_twisted
from hypothesis import given
from hypothesis import strategies as st

from zkserver.webhooks.backoff import RetryPolicy, retry_after
from zkserver.webhooks.signing import sign, signed_headers, verify
from zkserver.webhooks.urls import (
    BadWebhookURL,
    check_webhook_url,
    forbidden_address,
    host_address,
    parse_webhook_url,
)

# --- signature -------------------------------------------------------------------------


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"type":"attendance","user_id":"1"}'
    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign("s3cret", 1700000000, body) == "sha256=" + expected


def test_headers_carry_ids_timestamp_and_signature() -> None:
    body = b"[1,2]"
    headers = signed_headers("k", 1700000000, body, ["41", "42"])
    assert headers["Content-Type"] == "application/json"
    assert headers["X-Zkserver-Event-Id"] == "41,42"
    assert headers["X-Zkserver-Timestamp"] == "1700000000"
    assert verify("k", "1700000000", body, headers["X-Zkserver-Signature"])


@pytest.mark.parametrize(
    ("secret", "timestamp", "body", "now", "ok"),
    [
        ("k", "1700000000", b"{}", None, True),
        ("other", "1700000000", b"{}", None, False),  # wrong secret
        ("k", "1700000001", b"{}", None, False),  # timestamp changed
        ("k", "1700000000", b"{} ", None, False),  # body changed
        ("k", "1700000000", b"{}", 1700000200.0, True),  # within 5 minutes
        ("k", "1700000000", b"{}", 1700000400.0, False),  # replayed later
        ("k", "not-a-number", b"{}", None, False),
    ],
)
def test_verify_as_a_receiver(secret, timestamp, body, now, ok) -> None:
    signature = sign("k", 1700000000, b"{}")
    assert verify(secret, timestamp, body, signature, now=now) is ok


@given(st.binary(max_size=200), st.integers(0, 2**33), st.text(min_size=1, max_size=40))
def test_signature_round_trip(body: bytes, timestamp: int, secret: str) -> None:
    assert verify(secret, str(timestamp), body, sign(secret, timestamp, body))


# --- URLs and SSRF -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.8.9.10",
        "::1",
        "10.0.0.5",
        "172.16.3.4",
        "172.31.255.255",
        "192.168.0.1",
        "fc00::1",
        "fd12:3456::1",
        "169.254.10.10",
        "169.254.169.254",
        "fe80::1",
        "fd00:ec2::254",
        "100.100.100.200",
        "100.64.0.1",
        "0.0.0.0",
        "::",
        "224.0.0.251",
        "::ffff:127.0.0.1",
        "::ffff:192.168.1.1",
        "240.0.0.1",
    ],
)
def test_internal_addresses_are_forbidden(address: str) -> None:
    assert forbidden_address(address) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "93.184.216.34", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert forbidden_address(address) is None


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://example.com/x", "http or https"),
        ("file:///etc/passwd", "http or https"),
        ("javascript:alert(1)", "http or https"),
        ("http://", "no host"),
        ("http://exa mple.com/", "spaces"),
        ("http://example.com:99999/", "not a valid URL"),
        ("https://example.com/#frag", "fragment"),
        ("", "http or https"),
        (42, "http or https"),
        ("https://example.com/" + "a" * 2000, "longer than"),
    ],
)
def test_bad_urls(url, message: str) -> None:
    with pytest.raises(BadWebhookURL, match=message):
        parse_webhook_url(url)


def test_url_parts() -> None:
    parsed = parse_webhook_url("HTTPS://Hooks.Example.COM./in?x=1")
    assert (parsed.scheme, parsed.host, parsed.port) == ("https", "hooks.example.com", 443)
    assert parse_webhook_url("http://[2001:db8::1]:8080/").port == 8080


def _resolver(table: dict[str, list[str]]):
    async def resolve(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError("Name or service not known")
        return table[host]

    return resolve


@pytest_twisted.ensureDeferred
async def test_ssrf_refuses_names_resolving_inside() -> None:
    resolve = _resolver(
        {"ok.example": ["93.184.216.34"], "sneaky.example": ["93.184.216.34", "10.0.0.7"]}
    )
    assert (await check_webhook_url("https://ok.example/h", resolve)).host == "ok.example"
    for url, reason in [
        ("http://sneaky.example/", "private"),
        ("http://127.0.0.1:5000/api/devices", "loopback"),
        ("http://169.254.169.254/latest/meta-data/", "metadata"),
        ("http://metadata.google.internal/", "metadata"),
        ("http://[::1]/", "loopback"),
        ("http://missing.example/", "does not resolve"),
    ]:
        with pytest.raises(BadWebhookURL, match=reason):
            await check_webhook_url(url, resolve)
    # The operator may allow private targets (tests, internal receivers).
    allowed = await check_webhook_url("http://127.0.0.1:9/", resolve, allow_private=True)
    assert allowed.host == "127.0.0.1"


# --- retry schedule ------------------------------------------------------------------------


def test_backoff_doubles_from_min_to_max() -> None:
    policy = RetryPolicy(retry_min=5, retry_max=3600, jitter=0.2)
    no_jitter = [policy.delay(n, rand=lambda: 0.0) for n in range(1, 13)]
    assert no_jitter[:6] == [5, 10, 20, 40, 80, 160]
    assert no_jitter[-1] == 3600 and max(no_jitter) == 3600
    full = [policy.delay(n, rand=lambda: 1.0) for n in range(1, 4)]
    assert full == pytest.approx([6, 12, 24])


@given(st.integers(1, 10_000), st.floats(0, 1))
def test_backoff_stays_within_bounds(attempt: int, r: float) -> None:
    policy = RetryPolicy(retry_min=5, retry_max=3600)
    assert 5 <= policy.delay(attempt, rand=lambda: r) <= 3600


def test_give_up_after_the_window() -> None:
    policy = RetryPolicy(give_up=86400)
    assert not policy.exhausted(1000.0, 1000.0 + 86399)
    assert policy.exhausted(1000.0, 1000.0 + 86400)


# --- Retry-After (RFC 9110 10.2.3: delay-seconds or an HTTP-date, 5.6.7) --------------------

NOW = 784_111_777.0  # Sun, 06 Nov 1994 08:49:37 GMT, RFC 9110's example date


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        ("0", 0.0),
        (" 120 ", 120.0),  # optional whitespace around a field value
        ("Sun, 06 Nov 1994 08:51:37 GMT", 120.0),  # IMF-fixdate
        ("Sunday, 06-Nov-94 08:51:37 GMT", 120.0),  # obsolete RFC 850 form
        ("Sun Nov  6 08:51:37 1994", 120.0),  # obsolete asctime form
        ("Sun, 06 Nov 1994 08:48:37 GMT", -60.0),  # already past: no wait
        ("99999999999999999999999999", 1e12),  # absurd: any cap applies to it
        ("9" * 5000, 1e12),  # past int()'s 4300-digit limit: as absurd, not a ValueError
        ("0" * 5000 + "120", 120.0),  # leading zeros are still delay-seconds
    ],
)
def test_retry_after_values(value: str, seconds: float) -> None:
    assert retry_after(value, NOW) == seconds


@pytest.mark.parametrize(
    "value",
    [
        "",
        "-5",  # negative: not delay-seconds
        "1.5",
        "+120",
        "120 s",
        "soon",
        "\u0661\u0662\u0660",  # Arabic-Indic digits are not DIGIT
        "120, 60",  # two Retry-After fields joined
        "Sun, 06 Nov 1994 08:51:37 +0200",  # an HTTP-date is always GMT
        "Sun, 06 Nov 1994 08:51:37",
        "Sun, 31 Feb 1994 08:51:37 GMT",
        "sun, 06 nov 1994 08:51:37 GMT",  # day and month names are case-sensitive
        "Sun, 06 Nov 1994 25:51:37 GMT",
    ],
)
def test_malformed_retry_after_is_none(value: str) -> None:
    assert retry_after(value, NOW) is None


def test_rfc850_two_digit_years_are_never_far_in_the_future() -> None:
    # RFC 9110 5.6.7: a year "more than 50 years in the future" is the most recent past
    # year with the same last two digits.
    now = 1_800_000_000.0  # Fri, 15 Jan 2027 08:00:00 GMT
    assert retry_after("Friday, 15-Jan-27 08:02:00 GMT", now) == 120.0
    assert retry_after("Wednesday, 01-Jan-76 00:00:00 GMT", now) == 3_345_062_400 - now
    assert retry_after("Friday, 01-Jan-99 00:00:00 GMT", now) == 915_148_800 - now  # 1999


def test_retry_after_waits_at_least_the_backoff_at_most_the_cap() -> None:
    policy = RetryPolicy(retry_min=5, retry_max=600)
    assert policy.honour(5.0, None) == 5
    assert policy.honour(5.0, 120.0) == 120
    assert policy.honour(20.0, 10.0) == 20  # the backoff is longer
    assert policy.honour(5.0, -60.0) == 5  # a date past
    assert policy.honour(5.0, 7200.0) == 600  # --webhook-retry-max


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        # Forms the system's resolver (inet_aton) reads as IPv4 addresses: refused as the
        # address they are, whatever a resolver (or a DNS server) would answer for them.
        ("http://127.1/", "loopback"),
        ("http://2130706433/", "loopback"),
        ("http://0x7f.1/", "loopback"),
        ("http://0x7f000001:8080/", "loopback"),
        ("http://0177.0.0.1/", "loopback"),
        ("http://017700000001/", "loopback"),
        ("http://0/", "unspecified"),
        ("http://10.1/", "private"),
        ("http://192.168.1/", "private"),
        ("http://0xa9.0xfe.0xa9.0xfe/", "metadata"),
    ],
)
@pytest_twisted.ensureDeferred
async def test_numeric_host_forms_are_addresses(url: str, reason: str) -> None:
    public = _resolver({})  # any name "resolves" nowhere: only the literal check can refuse

    async def everything_public(host: str, port: int) -> list[str]:
        return ["93.184.216.34"]

    for resolve in (public, everything_public):
        with pytest.raises(BadWebhookURL, match=reason):
            await check_webhook_url(url, resolve)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        # Twisted's client cannot send to a URL with user:password@ (every delivery failed
        # with "invalid hostname"), and the listing would show the password: refused.
        ("http://user:pass@hooks.example.com/in", "user"),
        ("https://token@hooks.example.com/in", "user"),
        ("http://:@hooks.example.com/in", "user"),
        ("http://hooks.example.com:0/in", "port"),
    ],
)
def test_urls_that_cannot_be_delivered(url: str, message: str) -> None:
    with pytest.raises(BadWebhookURL, match=message):
        parse_webhook_url(url)


def test_non_default_ports_and_names_that_look_numeric_are_kept() -> None:
    assert parse_webhook_url("https://hooks.example.com:8443/in").port == 8443
    assert parse_webhook_url("http://1.2.3.4.example.com/").host == "1.2.3.4.example.com"


@given(st.text(alphabet="0123456789xXabcdef.", min_size=1, max_size=16))
def test_numeric_hosts_read_as_the_system_resolver_reads_them(host: str) -> None:
    try:
        expected: str | None = str(ipaddress.IPv4Address(socket.inet_aton(host)))
    except OSError:
        expected = None
    assert host_address(host) == expected
