"""docs/runbook/ against what it documents: every alarm of infra/template.json has its page (and
``python -m ops alarms`` points at it), and every ``python -m ops`` command a page tells an operator to
run exists, with the options the page gives it. A runbook whose commands have drifted fails at 3 a.m.;
this fails in CI instead."""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import typer.main

from infra.provision import load_template, resolve
from ops import observe
from ops.cli import app

ROOT = Path(__file__).resolve().parents[2]
RUNBOOK = ROOT / "docs" / "runbook"
OPS_CALL = re.compile(r"python -m ops ((?:[^|;&)`\"'\n]|\"[^\"\n]*\"|'[^'\n]*')+)")


def _pages() -> dict[Path, str]:
    return {page: page.read_text(encoding="utf-8") for page in sorted(RUNBOOK.rglob("*.md"))}


def test_every_alarm_in_the_template_has_its_runbook_page() -> None:
    resources = load_template()["Resources"].values()
    names = {resolve(r["Properties"]["AlarmName"], "s") for r in resources if r.get("Type") == "AWS::CloudWatch::Alarm"}
    suffixes = {name.removeprefix("loan-crm-s-") for name in names}

    assert suffixes == set(observe.ALERT_PAGES), "a new or renamed alarm needs its page in docs/runbook/alerts/"
    index = (RUNBOOK / "index.md").read_text(encoding="utf-8")
    for suffix, page in observe.ALERT_PAGES.items():
        text = (RUNBOOK / "alerts" / page).read_text(encoding="utf-8")
        assert f"loan-crm-<stage>-{suffix}" in text, page
        for heading in ("## What it means", "## Impact", "## Diagnose", "## Mitigate", "## Escalate"):
            assert heading in text, (page, heading)
        assert f"(alerts/{page})" in index, f"index.md does not link {page}"


def test_every_alarm_description_names_its_runbook_page() -> None:
    """The page an on-call engineer needs is in the alarm notification itself."""
    alarms = [
        r["Properties"] for r in load_template()["Resources"].values() if r.get("Type") == "AWS::CloudWatch::Alarm"
    ]
    assert alarms
    for alarm in alarms:
        suffix = resolve(alarm["AlarmName"], "s").removeprefix("loan-crm-s-")
        page = f"docs/runbook/alerts/{observe.ALERT_PAGES[suffix]}"
        assert alarm["AlarmDescription"].endswith(f"Runbook: {page}"), suffix
        assert (ROOT / page).is_file(), page


def _words(call: str) -> list[str]:
    """The words of one ``python -m ops ...`` call as a shell would split them, placeholders kept whole."""
    call = re.sub(r"\$\([^)]*\)", "VALUE", call)  # $(python -m ops dates yesterday) inside an argument
    call = re.sub(r"<[^>]*>", "PLACEHOLDER", call).split("#", 1)[0]
    return shlex.split(call.rstrip().removesuffix("\\"))  # a continued line: its first part


def _check(command: Any, words: list[str], where: str) -> None:
    """Walk the words down the command tree; every option named must exist where it is used. (Typer
    ships its own copy of click, so commands are recognised by what they have, not by class.)"""
    named = [p for p in command.params if p.param_type_name == "option"]
    options = {"--help"} | {o for p in named for o in (*p.opts, *p.secondary_opts)}
    subcommands: dict[str, Any] | None = getattr(command, "commands", None)
    for position, word in enumerate(words):
        if word.startswith("--"):
            assert word.split("=", 1)[0] in options, f"{where}: {word} is not an option of {command.name}"
        elif subcommands is not None:
            assert word in subcommands, f"{where}: {word!r} is not a command of {command.name or 'ops'}"
            _check(subcommands[word], words[position + 1 :], where)
            return


def test_every_ops_command_in_the_runbook_exists() -> None:
    cli = typer.main.get_command(app)
    calls = 0
    for page, text in _pages().items():
        for line_number, line in enumerate(text.splitlines(), 1):
            for call in OPS_CALL.findall(line):
                words = _words(call)
                if not words or words[0].startswith("..."):
                    continue
                _check(cli, words, f"{page.relative_to(ROOT)}:{line_number}")
                calls += 1
    assert calls > 100, "the runbook's commands are python -m ops calls"


def test_the_runbook_is_free_of_the_old_page_and_of_machine_paths() -> None:
    for page, text in _pages().items():
        assert "RUNBOOK.md" not in text, page
        assert "SPEC §" not in text, page
        assert not re.search(r"/(home|Users|work)/\w", text), page
