"""The EMF metric lines the app writes (``adapters.metrics``), when many threads count at once: the
day-end run counts from its segment threads and from the loans of each page."""

from __future__ import annotations

import contextlib
import json
import threading
import time
from typing import Any

from chalicelib.adapters.metrics import EmfMetrics


class SlowStream:
    """stdout whose every write gives the other threads a turn: a line and its newline, written as two
    writes, are then as far apart as they can be."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        self.parts.append(text)
        time.sleep(0.001)
        return len(text)

    def flush(self) -> None:
        pass


def test_lines_written_from_many_threads_stay_whole() -> None:
    metrics = EmfMetrics("LoanCrm/Test")
    stream = SlowStream()
    start = threading.Barrier(8)

    def count(n: int) -> None:
        start.wait()
        for _ in range(5):
            metrics.count("RemindersQueued", times=n)

    with contextlib.redirect_stdout(stream):  # type: ignore[type-var]
        threads = [threading.Thread(target=count, args=(n,)) for n in range(1, 9)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    lines = "".join(stream.parts).splitlines()
    parsed: list[dict[str, Any]] = [json.loads(line) for line in lines]
    assert len(parsed) == 40
    assert sorted(int(p["RemindersQueued"][0]) for p in parsed) == sorted(n for n in range(1, 9) for _ in range(5))
