"""Business metrics as CloudWatch EMF lines (powertools). Alarms in infra/template.json watch them, the
dashboard shows the day-end ones (docs/logging.md, "Metrics").

Each data point is flushed at once with ``single_metric`` so a metric is never lost to an exception
later in the request, and nothing depends on a handler decorator flushing at the end.
"""

from __future__ import annotations

import os
import threading

from aws_lambda_powertools.metrics import MetricUnit, single_metric

from chalicelib.services.ports import MetricUnit as Unit

_WRITING = threading.Lock()
"""One EMF line at a time in the process: powertools prints a line and its newline as two writes, and
the day-end run counts from many threads at once (segments, and the loans of a page). Two lines run
together are one unparseable line to CloudWatch, and both data points would be lost."""


class EmfMetrics:
    """Implements ``services.ports.Metrics``."""

    def __init__(self, namespace: str) -> None:
        self._namespace = namespace
        self._service = os.environ.get("POWERTOOLS_SERVICE_NAME", "loan-crm")

    def count(self, name: str, times: int = 1, **dimensions: str) -> None:
        self._emit(name, times, MetricUnit.Count, dimensions)

    def measure(self, name: str, value: float, unit: Unit, **dimensions: str) -> None:
        self._emit(name, value, MetricUnit(unit), dimensions)

    def _emit(self, name: str, value: float, unit: MetricUnit, dimensions: dict[str, str]) -> None:
        with _WRITING, single_metric(name=name, unit=unit, value=value, namespace=self._namespace) as metric:
            metric.add_dimension(name="service", value=self._service)
            for key, dimension in dimensions.items():
                metric.add_dimension(name=key, value=dimension)
