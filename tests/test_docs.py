"""Docstrings and comments cite only documents that ship with the repository: every
reference to ``protocols.md`` is ``docs/protocols.md §X`` and section X exists."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [
    path
    for folder in ("zkserver", "tests", "bench")
    for path in sorted((ROOT / folder).rglob("*"))
    if path.suffix in {".py", ".js", ".html", ".sql"} and "__pycache__" not in path.parts
]
SECTION = re.compile(r"^###? ([A-Z]\.\d+[a-z]?|[A-Z])\.? ", re.MULTILINE)
CITATION = re.compile(r"docs/protocols\.md\s+(§[A-Z](?:\.\d+[a-z]?)?)")


def _sections() -> set[str]:
    text = (ROOT / "docs" / "protocols.md").read_text(encoding="utf-8")
    return {"§" + m.group(1) for m in SECTION.finditer(text)}


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8", errors="replace")


def test_the_protocol_document_has_numbered_parts_and_sections() -> None:
    sections = _sections()
    assert {"§A", "§B", "§A.1", "§A.5b", "§B.7", "§B.8"} <= sections


def test_every_protocol_citation_names_an_existing_section() -> None:
    sections = _sections()
    bad = []
    for path in SOURCES:
        if path.name == "test_docs.py":
            continue
        text = _text(path)
        for match in re.finditer(r"protocols\.md", text):
            cited = CITATION.match(text, max(0, match.start() - 5))
            if cited is None or cited.group(1) not in sections:
                line = text.count("\n", 0, match.start()) + 1
                bad.append(f"{path.relative_to(ROOT)}:{line}")
    assert not bad, f"cite docs/protocols.md §<section that exists>: {bad}"


def test_nothing_cites_documents_outside_the_repository() -> None:
    outside = re.compile(r"shared/(protocols|design|stack|style)\.md")
    bad = [
        str(path.relative_to(ROOT))
        for path in SOURCES
        if path.name != "test_docs.py" and outside.search(_text(path))
    ]
    assert not bad, bad


def test_the_readme_options_table_is_one_table_listing_every_option() -> None:
    """Every option of ``twistd zkserver --help`` has a row in the README's options table,
    and the rows form one Markdown table (a blank line ends a table: rows after it are
    shown as plain text with pipes)."""
    from zkserver.tap import Options

    options = Options()
    names = {p[0] for p in options.optParameters} | {f[0] for f in options.optFlags}
    names -= {"config", "worker"}  # described in the text / internal
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Options\n", 1)[1].split("\n## ", 1)[0]
    lines = section.split("\n")
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    table = "\n".join(lines[start:end])
    assert not names - set(re.findall(r"`--([a-z-]+)`", table))
