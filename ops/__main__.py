"""``python -m ops ...``: see ``ops.cli``."""

from ops.cli import app

app(prog_name="python -m ops")
