"""Two places where moto spends CPU on what no test looks at, made cheap without changing what moto
answers or stores. tests/integration/test_moto_speedups.py holds each to moto's own behaviour.

TransactWriteItems. moto backs each transaction up by deep-copying every table it names before the first
write, so that a refused transaction can put them back. Every loan write names the audit table, which
only grows: a test that writes a few hundred loans spends most of its time copying audit entries it never
touches (about three quarters of the 300-loan day-end test). The rollback only needs what the transaction
can change: the items at the keys it writes (a write changes no other item) and the tables' item maps as
they were (so an item it added goes and one it deleted comes back in its place).
:func:`transact_write_items` is moto's own method with that backup instead of the deep copies; everything
else (the checks, their order, the errors and their cancellation reasons, the writes themselves) is moto's
code unchanged. It is a copy, so it is only used with the moto it was copied from (:data:`MOTO_VERSION`).

KMS keys. moto generates an RSA-2048 key pair for every KMS key, even for a symmetric key, which can
never sign or verify; and the first encrypted table of every test's fresh moto makes DynamoDB's default
key, a symmetric one: 20 to 200 ms of CPU in each test that provisions a stage (most of provisioning).
Symmetric keys now share one such pair, made once; every other kind of key gets its own as before. What
a symmetric key encrypts with, its own key material, is still its own.

A stage. Every test on moto provisions its stage (``infra.provision``: thirteen tables with their TTL and
backup settings, four flags, two topics), some 35 requests through botocore and moto: about 75 ms of CPU
in each of some 350 tests, more than many of them spend on what they test. :class:`StageTemplate`
provisions one stage per process with that same code and keeps what it left in moto's DynamoDB, SNS and
SSM backends; each test's fresh moto gets a copy of it in a few milliseconds.

And one place where moto spends CPU on requests it does not even answer. The DynamoDB Local tests keep
SSM, SNS and the rest in moto, so moto sees every request, the DynamoDB Local ones too, and tries each
against the URL patterns of every service it mocks before letting it through: about a fifth of the
client-side CPU of a DynamoDB Local call, measured. :func:`mock_aws_beside` names the local server's
address as one moto lets through at once (moto's own ``passthrough`` setting).
"""

from __future__ import annotations

import copy
import pickle
import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import boto3
import moto
import moto.kms.models
from moto import mock_aws
from moto.core import DEFAULT_ACCOUNT_ID
from moto.core.config import default_user_config
from moto.core.utils import unix_time, utcnow
from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    ConditionalCheckFailed,
    MockValidationException,
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend, dynamodb_backends
from moto.dynamodb.models.table import Table
from moto.kms.utils import AbstractPrivateKey, KeySpec
from moto.sns.models import sns_backends
from moto.ssm.models import ssm_backends

from infra.provision import provision, topic_specs

MOTO_VERSION = "5.2.5"
"""The moto whose ``DynamoDBBackend.transact_write_items`` :func:`transact_write_items` copies."""

_MOTO_TRANSACT_WRITE_ITEMS = DynamoDBBackend.transact_write_items


class _Backup:
    """What a transaction can change in one table: its item map (references to the same items) and, on
    first touch, a deep copy of each item at a key the transaction writes (None: there was none)."""

    def __init__(self, table: Table) -> None:
        self.table = table
        if table.has_range_key:
            self.items: Any = defaultdict(dict, {h: dict(bucket) for h, bucket in table.items.items()})
        else:
            self.items = defaultdict(dict, table.items)
        self.stream_records = len(table.stream_shard.items) if table.stream_shard is not None else None
        self.before: dict[tuple[Any, Any], Any] = {}

    def touch(self, hash_value: Any, range_value: Any, current: Any) -> None:
        self.before.setdefault((hash_value, range_value), copy.deepcopy(current))

    def restore(self) -> None:
        for (hash_value, range_value), item in self.before.items():
            if item is None:
                continue  # absent before: the item map taken at the start does not have it
            if range_value is None:
                self.items[hash_value] = item
            else:
                self.items[hash_value][range_value] = item
        self.table.items = self.items
        if self.stream_records is not None and self.table.stream_shard is not None:
            del self.table.stream_shard.items[self.stream_records :]


def transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    # A backup in case any of the transactions fail (moto: a deep copy of each table named).
    backups: dict[str, _Backup] = {}
    for item in transact_items:
        _, op = next(iter(item.items()))
        table_name = op.get("TableName")
        if table_name and table_name in self.tables and table_name not in backups:
            backups[table_name] = _Backup(self.tables[table_name])

    def rollback() -> None:
        for backup in backups.values():
            backup.restore()

    target_items: set[tuple[str, str]] = set()

    def check_unicity(table_name: str, key: dict[str, Any]) -> None:
        item = (str(table_name), str(dict(sorted(key.items()))))
        if item in target_items:
            raise MultipleTransactionsException()
        target_items.add(item)

    errors: list[tuple[str, str, dict[str, Any]] | tuple[None, None, None]] = []  # [(Code, Message, Item), ..]
    for item in transact_items:
        original_item: dict[str, Any] | None = None
        # Check transact writes are not performing multiple operations on the same item
        if len(list(item.keys())) > 1:
            raise TransactWriteSingleOpException

        try:
            op_type, op = next(iter(item.items()))
            if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
                raise ValueError("Unsupported transaction operation")

            table_name = op["TableName"]
            condition_expression = op.get("ConditionExpression")
            expression_attribute_names = op.get("ExpressionAttributeNames")
            expression_attribute_values = op.get("ExpressionAttributeValues")
            return_values_on_condition_check_failure = op.get("ReturnValuesOnConditionCheckFailure")

            if op_type == "Put":
                attrs = op["Item"]
                table = self.get_table(table_name)
                key = {table.hash_key_attr: attrs[table.hash_key_attr]}
                if table.range_key_attr is not None:
                    key[table.range_key_attr] = attrs[table.range_key_attr]
            else:
                key = op["Key"]

            check_unicity(table_name, key)

            current = self.get_item(table_name, key)
            # Not in moto: the item as it is before this transaction writes it.
            if table_name in backups:
                backups[table_name].touch(*self.get_keys_value(self.get_table(table_name), key), current)
            if condition_expression is not None:
                condition_op = get_filter_expression(
                    condition_expression,
                    expression_attribute_names,
                    expression_attribute_values,
                )
                if not condition_op.expr(current):
                    if return_values_on_condition_check_failure == "ALL_OLD" and current:
                        original_item = current.to_json()["Attributes"]
                    raise ConditionalCheckFailed(item=original_item)

            if op_type == "Put":
                attrs = op["Item"]
                self.put_item(
                    table_name,
                    attrs,
                    condition_expression=condition_expression,
                    expression_attribute_names=expression_attribute_names,
                    expression_attribute_values=expression_attribute_values,
                )
            elif op_type == "Delete":
                self.delete_item(
                    table_name,
                    key,
                    condition_expression=condition_expression,
                    expression_attribute_names=expression_attribute_names,
                    expression_attribute_values=expression_attribute_values,
                )
            elif op_type == "Update":
                update_expression = op["UpdateExpression"]
                self.update_item(
                    table_name,
                    key,
                    update_expression=update_expression,
                    condition_expression=condition_expression,
                    expression_attribute_names=expression_attribute_names,
                    expression_attribute_values=expression_attribute_values,
                )
            errors.append((None, None, None))
        except (MultipleTransactionsException, MockValidationException):
            # Rollback to the original state, and reraise the error
            rollback()
            raise
        except ConditionalCheckFailed as e:
            errors.append(("ConditionalCheckFailed", str(e.message), original_item))  # type: ignore[arg-type]
        except Exception as e:
            # For other exceptions, capture their details
            errors.append((type(e).__name__, str(e), original_item))  # type: ignore[arg-type]

    if any(code is not None for code, _, _ in errors):
        # Rollback to the original state, and reraise the errors
        rollback()
        raise TransactionCanceledException(errors)


_MOTO_GENERATE_PRIVATE_KEY = moto.kms.models.generate_private_key
_shared_pair: AbstractPrivateKey | None = None


def generate_private_key(key_spec: str) -> AbstractPrivateKey:
    """moto's, except that every symmetric key gets the same pair (one it never uses)."""
    global _shared_pair
    if key_spec != KeySpec.SYMMETRIC_DEFAULT:
        return _MOTO_GENERATE_PRIVATE_KEY(key_spec)
    if _shared_pair is None:
        _shared_pair = _MOTO_GENERATE_PRIVATE_KEY(key_spec)
    return _shared_pair


def install() -> bool:
    """Share the unused key pair of symmetric KMS keys, and use :func:`transact_write_items` in every moto
    DynamoDB backend of this process if moto is the version it was copied from (otherwise moto's own
    method stays, slow and right); true if both are in place."""
    moto.kms.models.generate_private_key = generate_private_key
    if moto.__version__ != MOTO_VERSION:
        return False
    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
    return True


def moto_transact_write_items() -> Any:
    """moto's own method, for the comparison test."""
    return _MOTO_TRANSACT_WRITE_ITEMS


def mock_aws_beside(endpoint: str) -> Any:
    """``mock_aws()`` for a test whose DynamoDB is the local server at ``endpoint``: every request to it
    goes straight through, without being tried against moto's services first. Not for nesting: moto
    puts its settings back only when the outermost block ends."""
    # moto replaces the "core" settings whole, so the others are copied as they are.
    core = {
        **default_user_config["core"],
        "passthrough": {"urls": [re.escape(endpoint.rstrip("/")) + "/"], "services": []},
    }
    return mock_aws(config={"core": core})  # type: ignore[typeddict-item]


@dataclass(frozen=True)
class _Saved:
    region: str
    dynamodb: bytes
    """The DynamoDB backend's state (its tables), pickled."""
    topics: tuple[tuple[str, dict[str, str]], ...]
    """Each SNS topic's name and attributes, as ``provision`` asks for them: moto's topics point at their
    backend, so they are made again through its own method rather than copied."""
    parameters: tuple[tuple[str, str, str], ...]
    """(name, value, type) of each SSM parameter: moto's parameter store does not pickle, and four
    parameters are put back through its own method as quickly."""


class StageTemplate:
    """One stage provisioned in moto once per process, by ``infra.provision`` as every stage is, and put
    back into each test's fresh moto (the module docstring says why). The stage's name is the same for
    every test of the process, which moto allows because each test's moto starts empty; the DynamoDB
    Local tests share one server per process and keep a stage per test.

    What is put back: the tables (with their indexes, TTL and backup settings, created and restorable
    from the moment they are put back), the topics and the flags. Not the KMS key moto makes for the
    encrypted tables: the tables still name it, but nothing reads it, and a table encrypted later (a
    restore) gets a key of its own, as it would in a stage that had never seen one."""

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self._saved: _Saved | None = None

    def prepare(self) -> None:
        """Provision the stage in a moto of its own, once: call it before the test's ``mock_aws()``."""
        if self._saved is None:
            self._saved = self._provision()

    def put_back(self) -> None:
        """Inside an active, freshly reset ``mock_aws()``: the stage as ``provision`` left it."""
        saved = self._saved
        assert saved is not None, "StageTemplate.prepare() first"
        dynamodb = dynamodb_backends[DEFAULT_ACCOUNT_ID][saved.region]
        dynamodb.__dict__.update(pickle.loads(saved.dynamodb))
        # Made now, as a provisioning now would make them: a restore to a point in time is refused
        # before the earliest restorable one, which would otherwise depend on when the template was made.
        made = utcnow()
        for table in dynamodb.tables.values():
            table.created_at = made
            recovery = table.continuous_backups["PointInTimeRecoveryDescription"]
            if recovery.get("PointInTimeRecoveryStatus") == "ENABLED":
                recovery["EarliestRestorableDateTime"] = recovery["LatestRestorableDateTime"] = unix_time()
        sns = sns_backends[DEFAULT_ACCOUNT_ID][saved.region]
        for name, attributes in saved.topics:
            sns.create_topic(name, dict(attributes), {})
        ssm = ssm_backends[DEFAULT_ACCOUNT_ID][saved.region]
        for name, value, kind in saved.parameters:
            ssm.put_parameter(name, None, value, kind, None, None, False, None, "text", tier=None, policies=None)

    def _provision(self) -> _Saved:
        with mock_aws():
            ddb = boto3.client("dynamodb")
            region = ddb.meta.region_name
            provision(self.stage, ddb, boto3.client("ssm"), quiet=True, sns=boto3.client("sns"))
            parameters = tuple(
                (name, versions[-1].value, versions[-1].parameter_type)
                for name, versions in ssm_backends[DEFAULT_ACCOUNT_ID][region]._parameters.items()
            )
            return _Saved(
                region,
                pickle.dumps(dynamodb_backends[DEFAULT_ACCOUNT_ID][region].__dict__),
                tuple(topic_specs(self.stage).items()),
                parameters,
            )
