"""Progress bars that read well in a terminal and in a log: a live bar on a TTY, a plain line a minute elsewhere."""
from __future__ import annotations

import sys
import time
from typing import IO, Any

from tqdm import tqdm

# A log line says where the step is and how fast, without the bar's drawing.
LOG_FORMAT = "{desc}: {percentage:3.0f}% {n_fmt}/{total_fmt} [{elapsed}<{remaining}, {rate_fmt}]"
LOG_INTERVAL = 60.0  # seconds between progress lines when stderr is a file, a pipe or `ray job logs`


class LogLines:
    """tqdm's update/close interface for a log: a whole line at the start, at most one per `interval` seconds,
    and one at the end (no carriage returns, no cursor moves, whatever other bars exist in the process)."""

    def __init__(self, total: int, desc: str, unit: str, initial: int, stream: IO[str], interval: float):
        self.total, self.desc, self.unit, self.n = total, desc, unit, initial
        self.stream, self.interval, self.start = stream, interval, time.monotonic()
        self.last_line, self.written = self.start, -1
        self._write()

    def _write(self) -> None:
        elapsed = time.monotonic() - self.start
        self.written = self.n
        self.stream.write(tqdm.format_meter(self.n, self.total, elapsed, prefix=self.desc, unit=self.unit,
                                            bar_format=LOG_FORMAT) + "\n")
        self.stream.flush()

    def update(self, n: int = 1) -> None:
        self.n += n
        now = time.monotonic()
        if now - self.last_line >= self.interval:
            self.last_line = now
            self._write()

    def close(self) -> None:
        if self.stream is not None:
            if self.written != self.n:  # the last count, once
                self._write()
            self.stream = None  # type: ignore[assignment]

    def __enter__(self) -> LogLines:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def bar(total: int, desc: str, unit: str, initial: int = 0, enabled: bool = True,
        stream: IO[str] | None = None, interval: float = LOG_INTERVAL) -> Any:
    """A progress bar over `total` items: tqdm redrawn in place on a terminal; on anything else (a log file, a pipe)
    LogLines, a line at most every `interval` seconds, so a million-image stage writes tens of lines, not a
    megabyte. enabled=False: writes nothing."""
    stream = stream or sys.stderr
    if stream.isatty() or not enabled:
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled, file=stream)
    return LogLines(total, desc, unit, initial, stream, interval)
