"""Progress in a log: the rate so far and the time left at that rate, a line at most every 10 s."""

from __future__ import annotations

import pytest

from rerank_eval.runtime import progress


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0.4, "0 s"), (12.4, "12 s"), (59.6, "1 min 00 s"), (168, "2 min 48 s"), (3599, "59 min 59 s"),
     (3720, "1 h 02 min"), (90_061, "25 h 01 min")],
)  # fmt: skip
def test_time_left_reads_as_hours_minutes_seconds(seconds, text):
    assert progress.duration(seconds) == text


def test_log_lines_carry_the_rate_and_the_time_left(monkeypatch, capsys):
    clock = iter([100.0, 105.0, 112.0, 130.0, 150.0])  # start, then one reading per advance
    monkeypatch.setattr(progress.time, "monotonic", lambda: next(clock))
    count = progress._LoggedCount(1000, "encoding x")
    count.advance(100)  # 5 s in: no line before 10 s
    count.advance(140)  # 12 s, 240 done: 20/s, 760 left, 38 s
    count.advance(10)  # 30 s, 250 done, but 18 s since the last line
    count.advance(750)  # 50 s, all done: no time left to say
    assert capsys.readouterr().err.splitlines() == [
        "encoding x: 240/1000 (20.0/s, 38 s left)",
        "encoding x: 250/1000 (8.3/s, 1 min 30 s left)",
        "encoding x: 1000/1000 (20.0/s)",
    ]


def test_library_bars_redraw_seldom_in_a_log():
    """A command whose stderr is a log (not a terminal) has tqdm bars of libraries such as
    ir_datasets redraw every 10 s, not every 0.1 s; a value the user set is kept. tqdm reads its
    settings when imported, so each case runs in a fresh interpreter, through the real CLI."""
    import os
    import subprocess
    import sys

    program = (
        "import io, sys\n"
        "sys.argv = ['rerank-eval', 'suites']\n"
        "from rerank_eval.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "import tqdm\n"
        "print(tqdm.tqdm(total=1, file=io.StringIO()).mininterval, file=sys.stderr)\n"
    )
    environment = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")}
    for extra, expected in [({}, "10.0"), ({"TQDM_MININTERVAL": "2"}, "2.0")]:
        done = subprocess.run(
            [sys.executable, "-c", program], env={**environment, **extra}, capture_output=True, text=True
        )
        assert done.stderr.strip().splitlines()[-1] == expected, done.stderr
