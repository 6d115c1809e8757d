"""Progress bars that read well in a terminal and in a log: a live bar on a TTY, a plain line a minute elsewhere."""
from __future__ import annotations

import sys
from typing import IO, Any

from tqdm import tqdm

# A log line says where the step is and how fast, without the bar's drawing.
LOG_FORMAT = "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]"
LOG_INTERVAL = 60.0  # seconds between progress lines when stderr is a file, a pipe or `ray job logs`


class _Lines:
    """A stream for tqdm that turns its carriage-return redraws into one whole line each."""

    def __init__(self, stream: IO[str]):
        self.stream, self.last = stream, ""

    def write(self, s: str) -> None:
        text = s.replace("\r", "").strip()
        count = text.split(" [")[0]
        if text and count != self.last:  # tqdm draws the final count twice (last update, then close)
            self.stream.write(text + "\n")
            self.last = count

    def flush(self) -> None:
        self.stream.flush()


def bar(total: int, desc: str, unit: str, initial: int = 0, enabled: bool = True,
        stream: IO[str] | None = None, interval: float = LOG_INTERVAL) -> Any:
    """tqdm over `total` items: redrawn in place on a terminal; on anything else (a log file, a pipe) a line at most
    every `interval` seconds and one at the end, so a million-image stage writes tens of lines, not a megabyte."""
    stream = stream or sys.stderr
    if stream.isatty():
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled, file=stream)
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled, file=_Lines(stream),
                mininterval=interval, maxinterval=interval, miniters=0, bar_format=LOG_FORMAT)
