"""Feature flags and kill switches from SSM (docs/rules.md), against moto: what ``GET /api/v1/flags`` shows,
that jobs read flags fresh, the API's cache window, and that an unreadable flag turns its automation
off and is counted (``FlagReadError``)."""

from __future__ import annotations

import json
import socket
from typing import Any

import boto3
import pytest

from chalicelib import wiring
from chalicelib.jobs.lambda_handlers import dpd_job
from tests.integration.api_helpers import (
    YESTERDAY,
    Api,
    api_fixture,  # noqa: F401 - the `api` fixture
    assert_error,
    imported_body,
)

FLAGS = "/api/v1/flags"
NAMES = ["CRON_ENABLED", "ESCALATION_ENABLED", "SCORING_ENABLED", "REMINDERS_ENABLED"]
OVERDUE_ROWS = [("2025-12-01", 50_000, 2_000), ("2026-06-01", 50_000, 2_000)]
"""dpd 104 on 14 Mar 2026: escalated by a run unless escalation is off."""


class LambdaContext:
    function_name = "loan-crm-test-dpd_job"

    def get_remaining_time_in_millis(self) -> int:
        return 850_000


def metric_docs(stdout: str) -> list[dict[str, Any]]:
    """Every EMF document printed (powertools writes one JSON document per line)."""
    docs = []
    for line in stdout.splitlines():
        line = line.strip()
        if line.startswith("{") and '"_aws"' in line:
            docs.append(json.loads(line))
    return docs


def flag_read_errors(stdout: str) -> list[str]:
    """The ``flag`` dimension of every FlagReadError metric printed."""
    found = []
    for doc in metric_docs(stdout):
        names = [m["Name"] for d in doc["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]]
        if "FlagReadError" in names:
            found.append(doc.get("flag"))
    return found


def parameter(api: Api, name: str) -> str:
    return f"/loan-crm/{api.stage}/flags/{name}"


def put_flag(api: Api, name: str, value: str) -> None:
    boto3.client("ssm").put_parameter(Name=parameter(api, name), Value=value, Type="String", Overwrite=True)


def flags(api: Api, as_: str = "admin") -> dict[str, dict[str, Any]]:
    reply = api.get(FLAGS, as_=as_)
    assert reply.status == 200, (reply.status, reply.body[:500])
    return {item["name"]: item for item in reply.json["items"]}


def run_job(api: Api) -> dict[str, Any]:
    reply = api.post("/api/v1/jobs/dpd/runs", {"business_date": YESTERDAY})
    assert reply.status == 200, (reply.status, reply.body[:500])
    result: dict[str, Any] = reply.json
    return result


@pytest.fixture
def fresh_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flags read from SSM on every use."""
    monkeypatch.setenv("FLAG_CACHE_SECONDS", "0")


# --- GET /api/v1/flags ---------------------------------------------------------------------------


@pytest.mark.parametrize(("role", "status"), [("admin", 200), ("auditor", 200), ("manager", 403), ("collector", 403)])
def test_who_may_read_flags(api: Api, role: str, status: int) -> None:
    reply = api.get(FLAGS, as_=role)
    if status == 403:
        assert_error(reply, 403, "FORBIDDEN")
    else:
        assert reply.status == 200
        assert sorted(i["name"] for i in reply.json["items"]) == sorted(NAMES)
    assert_error(api.get(FLAGS, as_=None), 401, "UNAUTHENTICATED")


def test_each_flag_shows_its_value_and_where_it_came_from(api: Api, capsys: pytest.CaptureFixture[str]) -> None:
    put_flag(api, "CRON_ENABLED", "true")
    put_flag(api, "ESCALATION_ENABLED", " FALSE ")
    boto3.client("ssm").delete_parameter(Name=parameter(api, "SCORING_ENABLED"))
    put_flag(api, "REMINDERS_ENABLED", "maybe")
    capsys.readouterr()

    shown = flags(api, as_="auditor")
    assert shown["CRON_ENABLED"] == {"name": "CRON_ENABLED", "enabled": True, "source": "ssm", "value": "true"}
    assert shown["ESCALATION_ENABLED"] == {
        "name": "ESCALATION_ENABLED",
        "enabled": False,
        "source": "ssm",
        "value": " FALSE ",
    }
    # Missing parameter: enabled, by default.
    assert shown["SCORING_ENABLED"] == {"name": "SCORING_ENABLED", "enabled": True, "source": "default", "value": None}
    # Junk: off, and counted.
    assert shown["REMINDERS_ENABLED"] == {
        "name": "REMINDERS_ENABLED",
        "enabled": False,
        "source": "unreadable",
        "value": "maybe",
    }
    assert flag_read_errors(capsys.readouterr().out) == ["REMINDERS_ENABLED"]
    assert api.get(FLAGS).json["cache_seconds"] == 60


# --- jobs read flags fresh; the API may cache ------------------------------------------------------


def test_flipping_cron_in_ssm_changes_the_next_run_without_a_restart(api: Api) -> None:
    api.create_loan(imported_body(OVERDUE_ROWS))
    assert flags(api)["CRON_ENABLED"]["enabled"] is True  # now cached in the API for 60 s

    put_flag(api, "CRON_ENABLED", "false")
    off = run_job(api)
    assert off["outcome"] == "SKIPPED"
    assert off["run"]["status"] == "SKIPPED"
    assert api.get("/api/v1/escalations").json["items"] == []

    put_flag(api, "CRON_ENABLED", "true")
    on = run_job(api)
    assert on["outcome"] == "COMPLETED"
    assert on["run"]["escalated"] == 1
    assert len(api.get("/api/v1/escalations").json["items"]) == 1


def test_the_api_keeps_a_cached_flag_for_the_cache_window_and_a_fresh_read_updates_it(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLAG_CACHE_SECONDS", "60")
    assert flags(api)["CRON_ENABLED"] == {"name": "CRON_ENABLED", "enabled": True, "source": "ssm", "value": "true"}
    put_flag(api, "CRON_ENABLED", "false")
    # Within the window the API still shows the value it read (real seconds have passed, not 60).
    assert flags(api)["CRON_ENABLED"]["enabled"] is True
    # The job reads fresh: it sees the change at once, and its read refreshes the cache.
    assert run_job(api)["outcome"] == "SKIPPED"
    assert flags(api)["CRON_ENABLED"]["enabled"] is False


def test_with_no_cache_a_change_shows_at_once(api: Api, fresh_flags: None) -> None:
    assert flags(api)["ESCALATION_ENABLED"]["enabled"] is True
    put_flag(api, "ESCALATION_ENABLED", "false")
    assert flags(api)["ESCALATION_ENABLED"] == {
        "name": "ESCALATION_ENABLED",
        "enabled": False,
        "source": "ssm",
        "value": "false",
    }
    assert api.get(FLAGS).json["cache_seconds"] == 0


# --- unreadable flags: that automation is off, and it is counted ----------------------------------


def test_a_junk_escalation_flag_runs_the_job_without_escalating(
    api: Api, capsys: pytest.CaptureFixture[str], fresh_flags: None
) -> None:
    loan = api.create_loan(imported_body(OVERDUE_ROWS))
    put_flag(api, "ESCALATION_ENABLED", "yes please")
    capsys.readouterr()
    result = run_job(api)
    assert result["outcome"] == "COMPLETED"
    assert (result["run"]["escalated"], result["run"]["pending_escalation"]) == (0, 1)
    assert api.loan(loan["loan_id"])["legal"]["escalated"] is False
    assert flag_read_errors(capsys.readouterr().out) == ["ESCALATION_ENABLED"]


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ssm_down_keeps_the_automation_off_and_counts_flag_read_errors(
    api: Api, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    loan = api.create_loan(imported_body(OVERDUE_ROWS))
    monkeypatch.setenv("AWS_ENDPOINT_URL_SSM", f"http://127.0.0.1:{_closed_port()}")
    wiring.reset()  # a new container: services are built again, with SSM unreachable
    api.mint_all()
    capsys.readouterr()

    result = run_job(api)
    assert result["outcome"] == "SKIPPED"
    assert result["run"]["status"] == "SKIPPED"
    assert flag_read_errors(capsys.readouterr().out) == ["CRON_ENABLED"]
    assert api.loan(loan["loan_id"])["legal"]["escalated"] is False
    assert api.get("/api/v1/escalations").json["items"] == []

    # The scheduled invocation behaves the same.
    capsys.readouterr()
    answer = dpd_job({"scheduled_time": "2026-03-14T19:00:00Z"}, LambdaContext())
    assert answer["outcome"] == "SKIPPED"
    assert flag_read_errors(capsys.readouterr().out) == ["CRON_ENABLED"]

    shown = flags(api)
    assert {name: (f["enabled"], f["source"]) for name, f in shown.items()} == {
        name: (False, "unreadable") for name in NAMES
    }
    assert sorted(flag_read_errors(capsys.readouterr().out)) == sorted(NAMES)

    # SSM back: the next run goes ahead (the skipped date may run again).
    monkeypatch.delenv("AWS_ENDPOINT_URL_SSM")
    wiring.reset()
    assert run_job(api)["outcome"] == "COMPLETED"
    assert api.loan(loan["loan_id"])["legal"]["escalated"] is True


def test_a_flag_provider_that_raises_is_unreadable(
    api: Api, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Broken:
        def get(self, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("throttled")

    from chalicelib.wiring import services

    monkeypatch.setattr(services().flags, "_provider", Broken())
    capsys.readouterr()
    assert run_job(api)["outcome"] == "SKIPPED"
    assert flag_read_errors(capsys.readouterr().out) == ["CRON_ENABLED"]
