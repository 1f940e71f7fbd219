"""Without Chromium/chromedriver the browser tests say why and what to do, in pytest's
summary line: skipped locally, failed under CI (where they must run)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ADVICE = "install Debian packages chromium and chromium-driver"


def run_page_tests(tmp_path: Path, ci: bool) -> str:
    """The README's test command (no summary options of our own: pyproject's addopts
    must be what puts the reason in the summary) on one page test."""
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    env["ZKSERVER_CHROMIUM"] = str(tmp_path / "no-chromium")
    env["ZKSERVER_CHROMEDRIVER"] = str(tmp_path / "no-chromedriver")
    if ci:
        env["CI"] = "1"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "no:randomly",
            "tests/web/test_page.py",
            "-k",
            "test_login_with_token_then_feed_renders and sqlite",
        ],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return result.stdout


def summary_lines(output: str) -> list[str]:
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if "short test summary info" in line)
    return lines[start + 1 :]


@pytest.mark.parametrize("ci", [False, True], ids=["local", "ci"])
def test_missing_browser_is_explained_in_the_summary(tmp_path, ci):
    output = run_page_tests(tmp_path, ci)
    expected = ("ERROR", "FAILED") if ci else ("SKIPPED",)
    lines = [line for line in summary_lines(output) if line.startswith(expected)]
    assert lines, output
    assert all(ADVICE in line for line in lines), output
