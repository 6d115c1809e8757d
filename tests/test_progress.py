"""inetseg.progress: a live bar on a terminal, whole lines at an interval in a log."""
from __future__ import annotations

import io
import time

from inetseg import progress


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_in_a_log_a_long_step_writes_whole_lines_not_redraws():
    log = io.StringIO()
    with progress.bar(100_000, "ingest", "img", stream=log, interval=3600) as bar:
        for _ in range(100_000):
            bar.update(1)
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    # the first line and the last, once: no redraw in between, however many updates (an hour's interval)
    assert len(lines) == 2 and lines[-1].startswith("ingest: 100%") and "100000/100000" in lines[-1]


def test_in_a_log_a_line_comes_every_interval():
    log = io.StringIO()
    with progress.bar(30, "crawl", "photo", stream=log, interval=0.05) as bar:
        for _ in range(30):
            time.sleep(0.01)
            bar.update(1)
    lines = log.getvalue().splitlines()
    assert 3 <= len(lines) <= 31 and all(x.startswith("crawl:") for x in lines)


def test_on_a_terminal_the_bar_redraws_in_place_and_disabled_writes_nothing():
    tty = Tty()
    with progress.bar(10, "synth corpus", "img", stream=tty) as bar:
        bar.update(10)
    assert "\r" in tty.getvalue()
    quiet = io.StringIO()
    with progress.bar(10, "synth corpus", "img", stream=quiet, enabled=False) as bar:
        bar.update(10)
    assert quiet.getvalue() == ""
