"""Business metrics as CloudWatch EMF lines (powertools). Alarms in infra/template.json watch them.

Each count is flushed at once with ``single_metric`` so a metric is never lost to an exception later
in the request, and nothing depends on a handler decorator flushing at the end.
"""

from __future__ import annotations

import os

from aws_lambda_powertools.metrics import MetricUnit, single_metric


class EmfMetrics:
    """Implements ``services.ports.Metrics``."""

    def __init__(self, namespace: str) -> None:
        self._namespace = namespace
        self._service = os.environ.get("POWERTOOLS_SERVICE_NAME", "loan-crm")

    def count(self, name: str, times: int = 1, **dimensions: str) -> None:
        with single_metric(name=name, unit=MetricUnit.Count, value=times, namespace=self._namespace) as metric:
            metric.add_dimension(name="service", value=self._service)
            for key, value in dimensions.items():
                metric.add_dimension(name=key, value=value)
