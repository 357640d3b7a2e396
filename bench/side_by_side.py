"""Two ways of doing the same bulk write, measured one after the other in one run on one DynamoDB Local,
and printed side by side with their ratio (``bench.imports``, ``bench.reassignment``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from bench import summary
from bench.floor import Priced


@dataclass
class Way:
    loans: int
    seconds: float
    requests: Counter[str]
    python_cpu: float
    """CPU of this process (the importer, or the API's service code)."""
    server_cpu: float
    """CPU of the DynamoDB Local server."""
    priced: Priced | None = None
    priced_loans: int = 0


def per_loan(priced: Priced | None, loans: int) -> float:
    """Write units a loan, priced from the items (``bench.floor``)."""
    return priced.total("priced") / loans if priced is not None and loans else float("nan")


def print_ways(ways: dict[str, Way], title: str, cpu_label: str) -> None:
    """The figures of each way in a column, and the last way's ratio to the first."""
    print(title)
    print(f"{'figure':<44}" + "".join(f"{label:>28}" for label in ways) + f"{'ratio':>8}")

    def line(name: str, value: Callable[[Way], float], fmt: str) -> None:
        values = [value(way) for way in ways.values()]
        ratio = values[-1] / values[0] if values[0] else float("nan")
        print(f"{name:<44}" + "".join(f"{v:>28{fmt}}" for v in values) + f"{ratio:>8.2f}")

    line("wall time s", lambda w: w.seconds, ".1f")
    line("loans a second", lambda w: w.loans / w.seconds, ",.0f")
    line("requests a loan", lambda w: sum(w.requests.values()) / w.loans, ".3f")
    line("  TransactWriteItems a loan", lambda w: w.requests["TransactWriteItems"] / w.loans, ".3f")
    line(f"{cpu_label} CPU ms a loan", lambda w: 1000 * w.python_cpu / w.loans, ".2f")
    line("DynamoDB Local CPU ms a loan", lambda w: 1000 * w.server_cpu / w.loans, ".2f")
    if any(way.priced is not None for way in ways.values()):
        line("write units a loan (priced from the items)", lambda w: per_loan(w.priced, w.priced_loans), ".2f")


def record_headlines(name: str, size: str, base: Way, new: Way) -> None:
    """The new way's headlines for bench/RESULTS.md, each with its ratio to the base way: wall time,
    the server's CPU a loan and, when priced, write units a loan."""
    against = "one loan to a transaction"
    summary.record(
        f"{name}, {size}: wall time",
        f"{new.seconds:.1f} s, {sum(new.requests.values()) / new.loans:.3f} requests a loan",
        new.seconds / base.seconds,
        against,
    )
    summary.record(
        f"{name}: DynamoDB Local CPU a loan",
        f"{1000 * new.server_cpu / new.loans:.2f} ms",
        new.server_cpu / base.server_cpu,
        against,
    )
    if new.priced is not None and base.priced is not None:
        per, then = per_loan(new.priced, new.priced_loans), per_loan(base.priced, base.priced_loans)
        summary.record(f"{name}: write units a loan", f"{per:.2f}", per / then, against)
