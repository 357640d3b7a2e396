"""The local stack's business metrics in (moto's) CloudWatch, as Lambda's log agent would put them there.

In AWS, CloudWatch turns the EMF lines a function prints into metrics. Locally those lines only reach a
log file, so nothing could show whether an alarm would have fired. :class:`MetricsTee` sits in front of
a stream: every line still goes to the stream unchanged, and each EMF document is also written to the
local CloudWatch with ``put_metric_data``, so ``python -m ops --local alarms`` reads the same metrics,
names and dimensions an alarm in AWS would watch.
"""

from __future__ import annotations

import io
import json
import sys
import threading
from typing import Any, TextIO

import boto3

EMF_MARKER = '"_aws"'


def emf_metric_data(document: dict[str, Any]) -> tuple[str, list[dict[str, Any]]] | None:
    """``(namespace, MetricData)`` for one EMF document, or None when it is not one. Powertools writes a
    single directive per document; each metric is put with the directive's dimension set."""
    directives = document.get("_aws", {}).get("CloudWatchMetrics") or []
    if len(directives) != 1:
        return None
    directive = directives[0]
    dimension_sets = directive.get("Dimensions") or [[]]
    data = []
    for metric in directive.get("Metrics", []):
        name = metric["Name"]
        values = document.get(name)
        for value in values if isinstance(values, list) else [values]:
            if not isinstance(value, int | float):
                continue
            for dimension_set in dimension_sets:
                data.append(
                    {
                        "MetricName": name,
                        "Dimensions": [{"Name": d, "Value": str(document[d])} for d in dimension_set],
                        "Value": float(value),
                        "Unit": metric.get("Unit", "None"),
                    }
                )
    return (str(directive["Namespace"]), data) if data else None


class MetricsTee(io.TextIOBase):
    """A text stream that writes through to ``stream`` and forwards EMF lines to CloudWatch. A failure to
    forward is reported once on stderr and never breaks the process printing the line."""

    def __init__(self, stream: TextIO, cloudwatch: Any | None = None) -> None:
        self._stream = stream
        self._cloudwatch = cloudwatch
        self._pending = ""
        self._warned = False
        # The local API server answers each request on its own thread: one line must not be split
        # between two writers' buffers.
        self._lock = threading.Lock()

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        with self._lock:
            written = self._stream.write(text)
            self._pending += text
            *lines, self._pending = self._pending.split("\n")
        for line in lines:
            if EMF_MARKER in line:
                self._forward(line)
        return written

    def flush(self) -> None:
        self._stream.flush()

    def _forward(self, line: str) -> None:
        try:
            found = emf_metric_data(json.loads(line))
            if found is None:
                return
            if self._cloudwatch is None:
                self._cloudwatch = boto3.client("cloudwatch")
            namespace, data = found
            self._cloudwatch.put_metric_data(Namespace=namespace, MetricData=data)
        except Exception as exc:
            if not self._warned:
                self._warned = True
                print(f"local metrics: could not forward an EMF line to CloudWatch ({exc})", file=sys.stderr)
