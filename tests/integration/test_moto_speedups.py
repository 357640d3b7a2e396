"""The suite's changes to moto (tests/moto_speedups.py) change nothing moto answers or stores.

TransactWriteItems leaves exactly what moto's own leaves: the same tables, item for item and in the same
order, and the same error with the same cancellation reasons, over random transactions that commit, are
cancelled by a condition or a bad write, or are refused whole (two writes to one item). KMS keys still
encrypt with their own material, and keys that sign still have their own pairs. A stage put back from
the template is what provisioning it leaves, and what one test writes to it is gone from the next. Beside
a DynamoDB Local server, moto lets that server's requests through and keeps answering everything else."""

from __future__ import annotations

import copy
import datetime as dt
import random
import time
from collections.abc import Iterator
from typing import Any

import boto3
import moto
import moto.kms.models
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.config import default_user_config, mock_credentials, passthrough_url
from moto.dynamodb.models import DynamoDBBackend, dynamodb_backends
from moto.kms.models import kms_backends

from tests import moto_speedups

TRANSACTIONS = 400
KEYS = 6
"""Few keys, so that transactions keep meeting the items earlier ones wrote, updated and deleted."""


def test_the_copied_method_is_the_one_of_the_installed_moto() -> None:
    assert moto.__version__ == moto_speedups.MOTO_VERSION, (
        f"moto is now {moto.__version__}: compare tests/moto_speedups.py with this moto's "
        "DynamoDBBackend.transact_write_items, carry its changes over, then update MOTO_VERSION"
    )
    assert DynamoDBBackend.transact_write_items is moto_speedups.transact_write_items


@pytest.fixture
def ddb() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("dynamodb", region_name="ap-south-1")
        for side in ("moto", "ours"):
            client.create_table(
                TableName=f"{side}-plain",
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST",
            )
            client.create_table(
                TableName=f"{side}-ranged",
                KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}],
                AttributeDefinitions=[
                    {"AttributeName": "pk", "AttributeType": "S"},
                    {"AttributeName": "sk", "AttributeType": "N"},
                ],
                BillingMode="PAY_PER_REQUEST",
            )
        yield client


def _key(rng: random.Random, table: str) -> dict[str, Any]:
    key: dict[str, Any] = {"pk": {"S": f"k{rng.randrange(KEYS)}"}}
    if table == "ranged":
        key["sk"] = {"N": str(rng.randrange(2))}
    return key


def _condition(rng: random.Random) -> dict[str, Any]:
    choice = rng.randrange(5)
    if choice == 0:
        return {"ConditionExpression": "attribute_not_exists(pk)"}
    if choice == 1:
        return {"ConditionExpression": "attribute_exists(pk)"}
    if choice == 2:
        return {"ConditionExpression": "n < :limit", "ExpressionAttributeValues": {":limit": {"N": "3"}}}
    return {}


def _write(rng: random.Random) -> tuple[str, dict[str, Any]]:
    table = rng.choice(["plain", "ranged"])
    key = _key(rng, table)
    kind = rng.choice(["Put", "Put", "Update", "Update", "Delete", "ConditionCheck"])
    extra = _condition(rng)
    if kind == "Put":
        item = {**key, "n": {"N": str(rng.randrange(5))}, "tags": {"SS": [f"t{rng.randrange(3)}"]}}
        if rng.random() < 0.05:
            del item["pk"]  # a write moto cannot make: the transaction is cancelled with its reason
        return table, {"Put": {"Item": item, **extra}}
    if kind == "Update":
        values = {**extra.pop("ExpressionAttributeValues", {}), ":one": {"N": "1"}, ":t": {"SS": ["u"]}}
        return table, {
            "Update": {
                "Key": key,
                "UpdateExpression": "ADD n :one, tags :t",
                "ExpressionAttributeValues": values,
                **extra,
            }
        }
    if kind == "Delete":
        return table, {"Delete": {"Key": key, **extra}}
    if not extra:
        extra = {"ConditionExpression": "attribute_exists(pk)"}
    return table, {"ConditionCheck": {"Key": key, **extra}}


def _named(side: str, writes: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The request for one side's tables; its own copy, as each request is parsed afresh from JSON (moto
    keeps parts of a request in the items it stores)."""
    named = []
    for table, write in copy.deepcopy(writes):
        [(kind, body)] = write.items()
        named.append({kind: {**body, "TableName": f"{side}-{table}"}})
    return named


def _run(backend: Any, method: Any, items: list[dict[str, Any]]) -> Any:
    try:
        method(backend, items)
    except Exception as exc:
        return type(exc).__name__, getattr(exc, "description", str(exc))
    return "committed"


def _tables(backend: Any, side: str) -> list[Any]:
    """Each table's items as stored, in the order a scan walks them (keys, buckets and items)."""
    dump: list[Any] = []
    for table in ("plain", "ranged"):
        items = backend.tables[f"{side}-{table}"].items
        if table == "ranged":
            dump.append([(h.value, [(r.value, i.to_json()) for r, i in bucket.items()]) for h, bucket in items.items()])
        else:
            dump.append([(h.value, i.to_json()) for h, i in items.items()])
    return dump


def test_random_transactions_leave_what_moto_leaves(ddb: Any) -> None:
    backend = dynamodb_backends[DEFAULT_ACCOUNT_ID]["ap-south-1"]
    rng = random.Random(20260315)
    outcomes: set[Any] = set()
    for n in range(TRANSACTIONS):
        writes = [_write(rng) for _ in range(rng.randrange(1, 5))]
        theirs = _run(backend, moto_speedups.moto_transact_write_items(), _named("moto", writes))
        ours = _run(backend, moto_speedups.transact_write_items, _named("ours", writes))
        assert ours == theirs, (n, writes)
        assert _tables(backend, "ours") == _tables(backend, "moto"), (n, writes)
        outcomes.add(theirs if theirs == "committed" else theirs[0])
    # Every path was taken: commits, cancellations, and refusals of the whole transaction.
    assert outcomes >= {"committed", "TransactionCanceledException", "MultipleTransactionsException"}, outcomes


def test_symmetric_keys_share_only_the_pair_they_never_use() -> None:
    assert moto.kms.models.generate_private_key is moto_speedups.generate_private_key
    with mock_aws():
        kms = boto3.client("kms", region_name="ap-south-1")
        first, second = (kms.create_key()["KeyMetadata"]["KeyId"] for _ in range(2))
        backend = kms_backends[DEFAULT_ACCOUNT_ID]["ap-south-1"]
        assert backend.keys[first].key_material != backend.keys[second].key_material
        sealed = kms.encrypt(KeyId=first, Plaintext=b"account 42")["CiphertextBlob"]
        opened = kms.decrypt(CiphertextBlob=sealed)
        assert (opened["KeyId"].rsplit("/", 1)[-1], opened["Plaintext"]) == (first, b"account 42")
        with pytest.raises(ClientError):
            kms.decrypt(CiphertextBlob=sealed, KeyId=second)

        signers = [kms.create_key(KeySpec="RSA_2048", KeyUsage="SIGN_VERIFY")["KeyMetadata"]["KeyId"] for _ in range(2)]
        assert len({kms.get_public_key(KeyId=k)["PublicKey"] for k in signers}) == 2
        signed = kms.sign(KeyId=signers[0], Message=b"m", SigningAlgorithm="RSASSA_PSS_SHA_256")["Signature"]
        for key, valid in zip(signers, (True, False), strict=True):
            answer = kms.verify(KeyId=key, Message=b"m", Signature=signed, SigningAlgorithm="RSASSA_PSS_SHA_256")
            assert answer["SignatureValid"] is valid


def test_beside_a_local_server_moto_lets_only_that_server_through() -> None:
    local = "http://127.0.0.1:1"
    with moto_speedups.mock_aws_beside(local):
        assert passthrough_url(f"{local}/")
        assert not passthrough_url("http://127.0.0.1:12/"), "another port is another server"
        assert not passthrough_url("https://ssm.ap-south-1.amazonaws.com/")
        # Everything else is still moto's, with moto's own settings.
        assert mock_credentials() and default_user_config["core"]["reset_boto3_session"]
        ssm = boto3.client("ssm", region_name="ap-south-1")
        ssm.put_parameter(Name="/beside/flag", Value="on", Type="String")
        assert ssm.get_parameter(Name="/beside/flag")["Parameter"]["Value"] == "on"
    assert not passthrough_url(f"{local}/"), "the setting ends with the block"


def _stage_as_seen(stage: str) -> dict[str, Any]:
    """Everything provisioning leaves, as the APIs describe it, without what differs between two
    provisionings of the same stage (creation times, the random id of the default KMS key)."""
    ddb, ssm, sns = boto3.client("dynamodb"), boto3.client("ssm"), boto3.client("sns")
    tables = {}
    for name in ddb.list_tables()["TableNames"]:
        table = ddb.describe_table(TableName=name)["Table"]
        table.pop("CreationDateTime")
        table.get("SSEDescription", {}).pop("KMSMasterKeyArn", None)
        for index in table.get("GlobalSecondaryIndexes", []):
            index.pop("IndexStatus", None)
        ttl = ddb.describe_time_to_live(TableName=name)["TimeToLiveDescription"]
        backups = ddb.describe_continuous_backups(TableName=name)["ContinuousBackupsDescription"]
        backups.get("PointInTimeRecoveryDescription", {}).pop("EarliestRestorableDateTime", None)
        backups.get("PointInTimeRecoveryDescription", {}).pop("LatestRestorableDateTime", None)
        tables[name] = (table, ttl, backups)
    parameters = {
        p["Name"]: (p["Value"], p["Type"], p["Version"])
        for p in ssm.get_parameters_by_path(Path=f"/loan-crm/{stage}/", Recursive=True)["Parameters"]
    }
    topics = {
        t["TopicArn"]: sns.get_topic_attributes(TopicArn=t["TopicArn"])["Attributes"]
        for t in sns.list_topics()["Topics"]
    }
    return {"tables": tables, "parameters": parameters, "topics": topics}


def test_a_stage_put_back_from_the_template_is_what_provisioning_leaves() -> None:
    from infra.provision import provision

    with mock_aws():
        provision("tmplcheck", boto3.client("dynamodb"), boto3.client("ssm"), quiet=True, sns=boto3.client("sns"))
        provisioned = _stage_as_seen("tmplcheck")
    template = moto_speedups.StageTemplate("tmplcheck")
    template.prepare()
    time.sleep(0.01)
    with mock_aws():
        before = dt.datetime.now(dt.UTC)
        template.put_back()
        assert _stage_as_seen("tmplcheck") == provisioned
        # Times as a provisioning now would set them, not the template's.
        ddb = boto3.client("dynamodb")
        table = ddb.describe_table(TableName="loan-crm-tmplcheck-loans")["Table"]
        recovery = ddb.describe_continuous_backups(TableName="loan-crm-tmplcheck-loans")
        earliest = recovery["ContinuousBackupsDescription"]["PointInTimeRecoveryDescription"]
        assert table["CreationDateTime"] >= before - dt.timedelta(milliseconds=1)
        assert earliest["EarliestRestorableDateTime"] >= before - dt.timedelta(milliseconds=1)
    assert len(provisioned["tables"]) == 13 and len(provisioned["parameters"]) == 4 and provisioned["topics"]


def test_what_one_test_writes_to_the_template_s_stage_is_gone_from_the_next() -> None:
    template = moto_speedups.StageTemplate("tmplwrites")
    template.prepare()
    table = "loan-crm-tmplwrites-loans"
    with mock_aws():
        template.put_back()
        ddb = boto3.client("dynamodb")
        ddb.put_item(TableName=table, Item={"loan_id": {"S": "L-1"}})
        boto3.client("ssm").put_parameter(
            Name="/loan-crm/tmplwrites/flags/CRON_ENABLED", Value="false", Type="String", Overwrite=True
        )
        assert ddb.scan(TableName=table)["Count"] == 1
    with mock_aws():
        template.put_back()
        assert boto3.client("dynamodb").scan(TableName=table)["Count"] == 0
        flag = boto3.client("ssm").get_parameter(Name="/loan-crm/tmplwrites/flags/CRON_ENABLED")["Parameter"]
        assert (flag["Value"], flag["Version"]) == ("true", 1)
