"""Two ways of doing the same bulk write, measured one after the other in one run on one DynamoDB Local,
and printed side by side with their ratio (``bench.imports``, ``bench.reassignment``)."""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import boto3

import bench.environment  # noqa: F401  (sets the environment before any client or the settings read it)
from bench import summary
from bench.dynamo import DynamoMeter, NoSsm, dynamodb_local, install_meter, unmetered_client
from bench.floor import Priced, WritePricer
from chalicelib import wiring
from chalicelib.domain.roles import Role
from infra.provision import provision
from local.dynamodb_local import Server


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


@dataclass(frozen=True)
class Rig:
    """One DynamoDB Local for both ways, every request metered, and a pricer for the priced runs."""

    server: Server
    meter: DynamoMeter
    pricer: WritePricer


@contextmanager
def rig() -> Iterator[Rig]:
    meter = DynamoMeter()
    install_meter(meter)
    with dynamodb_local() as server:
        os.environ["AWS_ENDPOINT_URL_DYNAMODB"] = server.endpoint
        yield Rig(server, meter, WritePricer(unmetered_client(server.endpoint), "loan-crm-"))


def fresh_stage(stage: str, collectors: Iterable[str]) -> None:
    """A stage of its own for one way (its own tables, so each way starts from the same empty book),
    with these collectors."""
    os.environ["STAGE"] = stage
    wiring.reset()
    provision(stage, boto3.client("dynamodb"), ssm=NoSsm(), quiet=True)
    for collector in collectors:
        wiring.services().auth.add_user(collector, "collector-password-1", Role.COLLECTOR)


def measure(bench: Rig, action: Callable[[], int]) -> Way:
    """``action`` (which answers how many loans it wrote) timed, its requests counted, and the CPU it
    cost this process and the server."""
    bench.meter.reset("")
    cpu, server_cpu, started = time.process_time(), bench.server.cpu_seconds(), time.perf_counter()
    loans = action()
    return Way(
        loans=loans,
        seconds=time.perf_counter() - started,
        requests=Counter(bench.meter.requests),
        python_cpu=time.process_time() - cpu,
        server_cpu=bench.server.cpu_seconds() - server_cpu,
    )


def price(bench: Rig, way: Way, action: Callable[[], int]) -> None:
    """``action`` again on other loans with every write priced from its items (not timed)."""
    bench.meter.pricer = bench.pricer
    with bench.pricer.fresh() as way.priced:
        way.priced_loans = action()
    bench.meter.pricer = None


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
