"""Where powertools keeps Idempotency-Key records: the stage's idempotency table (infra/template.json)."""

from __future__ import annotations

import os

import boto3
from aws_lambda_powertools.utilities.idempotency import DynamoDBPersistenceLayer

from chalicelib.config import Settings


def idempotency_store(settings: Settings) -> DynamoDBPersistenceLayer:
    client = boto3.client(
        "dynamodb",
        region_name=settings.region,
        endpoint_url=os.environ.get("AWS_ENDPOINT_URL_DYNAMODB") or None,
    )
    return DynamoDBPersistenceLayer(table_name=settings.table_name("idempotency"), boto3_client=client)
