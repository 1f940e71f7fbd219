"""``twistd zkserver`` options: command line over environment over TOML file, for every
option and its short form; lists, flags, bad values and the error messages."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.python import usage

from zkserver.tap import Options


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for key in list(os.environ):
        if key.startswith("ZKSERVER_"):
            monkeypatch.delenv(key)


def parse(*argv: str) -> Options:
    options = Options()
    options.parseOptions(list(argv))
    return options


def toml(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "zkserver.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("flag", ["-d", "--data-dir"])
def test_command_line_wins_over_environment_long_and_short(monkeypatch, flag):
    monkeypatch.setenv("ZKSERVER_DATA_DIR", "/x")
    assert parse(flag, "/y")["data-dir"] == "/y"
    assert parse(f"{flag}=/y" if flag.startswith("--") else f"{flag}/y")["data-dir"] == "/y"


def test_environment_wins_over_file_and_file_over_default(tmp_path, monkeypatch):
    config = toml(tmp_path, 'data-dir = "/from-file"\ntimezone = "Asia/Kolkata"\n')
    monkeypatch.setenv("ZKSERVER_DATA_DIR", "/from-env")
    options = parse("-c", str(config))
    assert options["data-dir"] == "/from-env"
    assert options["timezone"] == "Asia/Kolkata"
    monkeypatch.delenv("ZKSERVER_DATA_DIR")
    assert parse("-c", str(config))["data-dir"] == "/from-file"
    assert parse()["data-dir"] == "./zkserver-data"


def test_every_option_command_line_over_environment_over_file(tmp_path, monkeypatch):
    """For each option: set all three sources; the command line wins; without it the
    environment; without both the file."""
    cases = {
        # name: (file value, environment value, command-line arguments, cli result)
        "data-dir": ('"/f"', "/e", ["-d", "/c"], "/c"),
        "db": ('"sqlite:f"', "sqlite:e", ["--db", "sqlite:c"], "sqlite:c"),
        "token": ('"tf"', "te", ["--token=tc"], "tc"),
        "timezone": ('"+01:00"', "+02:00", ["--timezone", "+03:00"], "+03:00"),
        "poll-delay": ("11", "12", ["--poll-delay", "13"], 13),
        "error-delay": ("21", "22", ["--error-delay=23"], 23),
        "heartbeat": ("1.5", "2.5", ["--heartbeat", "3.5"], 3.5),
        "sse-buffer": ("1000", "2000", ["--sse-buffer", "3000"], 3000),
        "max-body": ("4000", "5000", ["--max-body", "6000"], 6000),
        "push": (
            '["tcp:1"]',
            "tcp:2 tcp:3",
            ["--push", "tcp:4", "--push", "tcp:5"],
            ["tcp:4", "tcp:5"],
        ),
        "web": ('["tcp:6"]', "tcp:7", ["--web", "tcp:8"], ["tcp:8"]),
        "cors-origin": (
            '["https://f"]',
            "https://e",
            ["--cors-origin", "https://c"],
            ["https://c"],
        ),
    }
    for name, (file_value, env_value, argv, expected) in cases.items():
        config = toml(tmp_path, f"{name} = {file_value}\n")
        env = "ZKSERVER_" + name.upper().replace("-", "_")
        monkeypatch.setenv(env, env_value)
        assert parse("--config", str(config), *argv)[name] == expected, name
        from_env = parse("--config", str(config))[name]
        monkeypatch.delenv(env)
        from_file = parse("--config", str(config))[name]
        if isinstance(expected, list):
            assert from_env == env_value.split(), name
            assert isinstance(from_file, list) and from_file, name
        else:
            assert str(from_env) == env_value, name
            assert str(from_file) == file_value.strip('"'), name


@pytest.mark.parametrize("flag", ["auto-approve", "no-pull", "secure-cookie"])
def test_flags_from_file_environment_and_command_line(tmp_path, monkeypatch, flag):
    key = "ZKSERVER_" + flag.upper().replace("-", "_")
    assert not parse()[flag]
    assert parse("--config", str(toml(tmp_path, f"{flag} = true\n")))[flag]
    monkeypatch.setenv(key, "yes")
    assert parse()[flag]
    monkeypatch.setenv(key, "0")
    assert not parse("--config", str(toml(tmp_path, f"{flag} = true\n")))[flag]
    assert parse(f"--{flag}")[flag]


def test_lists_default_and_repeat(monkeypatch):
    options = parse()
    assert options["push"] == ["tcp:8081"] and options["web"] == ["tcp:5000"]
    assert parse("--web", "tcp:1", "--web", "tcp:2")["web"] == ["tcp:1", "tcp:2"]
    monkeypatch.setenv("ZKSERVER_WEB", "tcp:3   tcp:4")
    assert parse()["web"] == ["tcp:3", "tcp:4"]
    assert parse("--web", "tcp:5")["web"] == ["tcp:5"]


def test_config_file_from_environment(tmp_path, monkeypatch):
    config = toml(tmp_path, 'timezone = "+05:30"\n')
    monkeypatch.setenv("ZKSERVER_CONFIG", str(config))
    assert parse()["timezone"] == "+05:30"
    other = tmp_path / "other.toml"
    other.write_text('timezone = "+01:00"\n')
    assert parse("-c", str(other))["timezone"] == "+01:00"


def test_underscore_keys_in_file(tmp_path):
    assert parse("-c", str(toml(tmp_path, "poll_delay = 7\n")))["poll-delay"] == 7


def usage_error(*argv: str) -> str:
    with pytest.raises(usage.UsageError) as caught:
        parse(*argv)
    return str(caught.value)


def test_unknown_key_in_file_names_key_and_file(tmp_path):
    config = toml(tmp_path, 'data-dir = "/x"\npoll-dealy = 5\n')
    message = usage_error("-c", str(config))
    assert "poll-dealy" in message and str(config) in message


def test_unreadable_or_invalid_file(tmp_path):
    assert str(tmp_path / "missing.toml") in usage_error("-c", str(tmp_path / "missing.toml"))
    broken = toml(tmp_path, "data-dir = \n")
    assert str(broken) in usage_error("-c", str(broken))


@pytest.mark.parametrize(
    "text, name",
    [
        ('poll-delay = "soon"\n', "poll-delay"),
        ("poll-delay = 0\n", "poll-delay"),
        ("heartbeat = -1\n", "heartbeat"),
        ("push = 5\n", "push"),
        ('push = ["tcp:1", 2]\n', "push"),
        ('auto-approve = "maybe"\n', "auto-approve"),
        ("data-dir = 3\n", "data-dir"),
        ("max-body = 1.5\n", "max-body"),
    ],
)
def test_bad_value_in_file_names_option_and_file(tmp_path, text, name):
    config = toml(tmp_path, text)
    message = usage_error("-c", str(config))
    assert name in message and str(config) in message


@pytest.mark.parametrize(
    "key, value, name",
    [
        ("ZKSERVER_POLL_DELAY", "soon", "poll-delay"),
        ("ZKSERVER_SSE_BUFFER", "-5", "sse-buffer"),
        ("ZKSERVER_NO_PULL", "perhaps", "no-pull"),
    ],
)
def test_bad_value_in_environment_names_variable(monkeypatch, key, value, name):
    monkeypatch.setenv(key, value)
    message = usage_error()
    assert key in message and repr(value) in message


def test_bad_value_on_command_line():
    assert "poll-delay" in usage_error("--poll-delay", "soon")
    assert "poll-delay" in usage_error("--poll-delay", "0")


def test_webhook_retry_min_above_max_is_refused():
    message = usage_error("--webhook-retry-min", "60", "--webhook-retry-max", "10")
    assert "--webhook-retry-min" in message and "--webhook-retry-max" in message
    assert (
        parse("--webhook-retry-min", "10", "--webhook-retry-max", "10")["webhook-retry-min"] == 10
    )


def test_an_empty_environment_variable_counts_as_unset(tmp_path, monkeypatch):
    """An env file with ``ZKSERVER_POLL_DELAY=`` (a blank template line) leaves the file's
    or the default value, as the ``zkserver`` console treats ``ZKSERVER_DATA_DIR=``;
    before, numbers were refused and ``data-dir`` became the working directory."""
    config = toml(tmp_path, "poll-delay = 7\nauto-approve = true\n")
    for name in ("POLL_DELAY", "DATA_DIR", "AUTO_APPROVE", "PUSH", "DB", "TOKEN"):
        monkeypatch.setenv(f"ZKSERVER_{name}", " ")
    options = parse("-c", str(config))
    assert options["poll-delay"] == 7 and options["auto-approve"] is True
    assert options["data-dir"] == "./zkserver-data" and options["push"] == ["tcp:8081"]
    assert not options["db"] and not options["token"]
    assert "data-dir" in usage_error("--data-dir", "")
