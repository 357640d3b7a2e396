"""Where powertools keeps Idempotency-Key records: the stage's idempotency table (infra/template.json)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import boto3

from chalicelib.config import Settings

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer


def idempotency_store(settings: Settings) -> DynamoDBPersistenceLayer:
    # Imported here, by the first request that carries an Idempotency-Key: powertools' idempotency
    # package is the biggest single import of the app (docs/architecture.md, "Cold start").
    from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

    client = boto3.client(
        "dynamodb",
        region_name=settings.region,
        endpoint_url=os.environ.get("AWS_ENDPOINT_URL_DYNAMODB") or None,
    )
    return DynamoDBPersistenceLayer(table_name=settings.table_name("idempotency"), boto3_client=client)
