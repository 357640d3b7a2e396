"""The environment every benchmark runs in, set when this module is imported: each bench imports it
before anything that reads the environment (a boto3 client, the settings). Fake credentials and a fixed region
and stage, so a bench can never reach AWS; no endpoint until the bench starts its own DynamoDB Local;
no reconciliation after a day-end run (it is measured on its own by ``bench.reconciliation``); and
logs from WARNING up."""

from __future__ import annotations

import os

os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_DEFAULT_REGION": "ap-south-1",
        "AWS_REGION": "ap-south-1",
        "STAGE": "bench",
        "JWT_SECRET": "bench-secret-that-is-long-enough-for-hs256-000",
        "RECONCILE_AFTER_DAY_END": "false",
        # A line per loan or reminder at INFO would bury the report (warnings and errors still show).
        "POWERTOOLS_LOG_LEVEL": "WARNING",
    }
)
for _name in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_DYNAMODB", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
    os.environ.pop(_name, None)
