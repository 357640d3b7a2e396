"""The operations CLI (``python -m ops``): kill switches, the day-end job, backups, loan import and
export, run by an operator against a stage. Never part of the Lambda package; it uses the same
services as the API, so every rule and audit entry is the API's."""
