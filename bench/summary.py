"""Headline figures a bench hands to the benchmark command (``python -m bench``), which puts them at the
top of bench/RESULTS.md. A bench run on its own (``python -m bench.payments``) records nothing: the
command names the file in ``BENCH_SUMMARY``."""

from __future__ import annotations

import json
import os

SUMMARY_ENV = "BENCH_SUMMARY"


def record(figure: str, value: str, ratio: float | None = None, against: str = "") -> None:
    """One headline: ``value`` as printed, and its ``ratio`` to the floor or baseline named by ``against``
    (measured in the same run)."""
    path = os.environ.get(SUMMARY_ENV)
    if not path:
        return
    with open(path, "a", encoding="utf-8") as out:
        out.write(json.dumps({"figure": figure, "value": value, "ratio": ratio, "against": against}) + "\n")
