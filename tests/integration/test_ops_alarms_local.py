"""``python -m ops --local alarms``: the local stack's metrics, forwarded from the EMF lines the code
prints (local.metrics), judged by the same rules as the stage's alarms, on a real moto server."""

from __future__ import annotations

import contextlib
import io
import socket
from collections.abc import Iterator

import boto3
import pytest
import requests
from moto.server import ThreadedMotoServer
from typer.testing import CliRunner

from chalicelib.adapters.metrics import EmfMetrics
from infra import alarms
from infra.provision import load_template
from local.environment import Ports, aws_environment
from local.metrics import MetricsTee
from ops.cli import app

STAGE = "local"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(name="moto_server")
def moto_server_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[Ports]:
    ports = Ports(dynamodb=_free_port(), moto=_free_port(), api=_free_port())
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=ports.moto, verbose=False)
    server.start()
    # moto's state is per process, not per server: start each test from an empty CloudWatch.
    requests.post(f"http://127.0.0.1:{ports.moto}/moto-api/reset", timeout=10)
    for name, value in {**aws_environment(ports), **{k: str(v) for k, v in ports.named().items()}}.items():
        monkeypatch.setenv(name, value)
    try:
        yield ports
    finally:
        server.stop()


def _rows(output: str) -> dict[str, str]:
    """Alarm name -> its table row, as printed."""
    return {
        name: line
        for line in output.splitlines()
        if line.startswith("│")
        for name in [w for w in line.replace("│", " ").split() if w.startswith(f"loan-crm-{STAGE}-")]
    }


def test_forwarded_metrics_show_which_alarms_would_fire(moto_server: Ports) -> None:
    written = io.StringIO()
    tee = MetricsTee(written, boto3.client("cloudwatch"))
    metrics = EmfMetrics(f"LoanCRM/{STAGE}")
    with contextlib.redirect_stdout(tee):
        metrics.count("PaymentFailed")
        for _ in range(4):
            metrics.count("DuplicateUtr")  # one short of the alarm's 5
        metrics.count("FlagReadError", flag="CRON_ENABLED")
        metrics.count("FlagReadError", flag="REMINDERS_ENABLED")  # two flags: the alarm sums them
        metrics.count("DpdRunMissing", times=0)
        metrics.count("PaymentRejected", reason="VALIDATION_ERROR")

    # Every line still reaches the log, unchanged.
    assert written.getvalue().count('"_aws"') == 9

    shown = CliRunner().invoke(app, ["--local", "alarms"], catch_exceptions=False, terminal_width=400)

    assert shown.exit_code == 0, shown.output
    rows = _rows(shown.stdout)
    business = alarms.business_alarms(load_template())
    assert {f"loan-crm-{STAGE}-{a.suffix}" for a in business} == set(rows)
    assert "WOULD FIRE" in rows[f"loan-crm-{STAGE}-payment-failed"]
    assert "WOULD FIRE" in rows[f"loan-crm-{STAGE}-flag-read-error"]
    assert "OK" in rows[f"loan-crm-{STAGE}-duplicate-utr"] and " 4 " in rows[f"loan-crm-{STAGE}-duplicate-utr"]
    # The watchdog reported 0 this hour: not missing, not firing.
    assert "OK" in rows[f"loan-crm-{STAGE}-dpd-run-not-completed-by-0600"]
    assert "no data" in rows[f"loan-crm-{STAGE}-escalation-failed"]
    assert "AWS's own metrics" in shown.stdout


def test_a_silent_watchdog_counts_as_a_missing_run(moto_server: Ports) -> None:
    shown = CliRunner().invoke(app, ["--local", "alarms"], catch_exceptions=False, terminal_width=400)

    rows = _rows(shown.stdout)
    assert "WOULD FIRE" in rows[f"loan-crm-{STAGE}-dpd-run-not-completed-by-0600"]
    assert "no data" in rows[f"loan-crm-{STAGE}-payment-failed"]


def test_local_alarms_refuse_what_only_a_stage_has(moto_server: Ports) -> None:
    refused = CliRunner().invoke(app, ["--local", "alarms", "--state", "ALARM"])
    assert refused.exit_code == 2
    assert "no alarm states" in refused.output


def test_a_line_that_is_not_a_metric_is_only_written() -> None:
    written = io.StringIO()

    class Refusing:
        def put_metric_data(self, **_: object) -> None:
            raise AssertionError("not a metric")

    tee = MetricsTee(written, Refusing())
    tee.write('{"level": "INFO", "message": "request"}\npartial')
    tee.write(" line\n")
    assert written.getvalue() == '{"level": "INFO", "message": "request"}\npartial line\n'
