"""The listener setup: the open-files limit thousands of streams need."""

from __future__ import annotations

import resource

from zkserver.listener import open_files_target, raise_open_files_limit

INF = resource.RLIM_INFINITY


def test_the_soft_limit_goes_up_to_the_hard_one() -> None:
    assert open_files_target(1024, 524288, 1 << 20) == 524288
    assert open_files_target(1024, INF, 1 << 20) == 1 << 20  # capped at fs.nr_open
    assert open_files_target(1024, 1 << 21, 1 << 20) == 1 << 20
    assert open_files_target(65536, 65536, 1 << 20) == 65536  # nothing to raise
    assert open_files_target(4096, 2048, 1 << 20) == 4096  # never lowered
    assert open_files_target(INF, INF, 1 << 20) == INF


def test_raise_open_files_limit_sets_the_soft_limit(tmp_path) -> None:
    calls = []
    nr_open = tmp_path / "nr_open"
    nr_open.write_text("1048576\n")
    limit = raise_open_files_limit(
        getrlimit=lambda _: (1024, 65536),
        setrlimit=lambda which, value: calls.append((which, value)),
        nr_open_path=str(nr_open),
    )
    assert limit == 65536
    assert calls == [(resource.RLIMIT_NOFILE, (65536, 65536))]


def test_a_refused_raise_keeps_the_limit(tmp_path) -> None:
    def refuse(which: int, value: tuple[int, int]) -> None:
        raise ValueError("not allowed")

    limit = raise_open_files_limit(
        getrlimit=lambda _: (1024, 65536), setrlimit=refuse, nr_open_path=str(tmp_path / "x")
    )
    assert limit == 1024
