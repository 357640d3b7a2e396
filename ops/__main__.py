"""``python -m ops ...``: see ``ops.cli``."""

from ops.cli import cli

cli()
