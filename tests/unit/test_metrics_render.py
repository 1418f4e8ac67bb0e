"""The Prometheus text renderer: HELP/TYPE lines, escaped label values, cumulative buckets."""

from __future__ import annotations

import math

from prometheus_client.parser import text_string_to_metric_families

from orchestrator.cloud.errors import ConfigError, OutcomeUnknown, Rejected, Retryable
from orchestrator.observability.metrics import (
    CELERY_QUEUES,
    Definition,
    Family,
    changeos_result,
    escape_label,
    format_value,
    histogram_samples,
    render,
)

HIST = Definition("t_seconds", "histogram", "A test histogram.", (1, 2.5, 10))


def test_counter_and_gauge_lines_with_help_and_type() -> None:
    text = render(
        [
            Family(
                Definition("t_calls_total", "counter", "Calls.\nSecond line \\ done."),
                [
                    ("", {"result": "accepted"}, 3.0),
                    ("", {"result": "Ecs.0603"}, 1.0),
                ],
            ),
            Family(Definition("t_depth", "gauge", "Depth."), [("", {}, 0.0)]),
        ]
    )
    assert text == (
        "# HELP t_calls_total Calls.\\nSecond line \\\\ done.\n"
        "# TYPE t_calls_total counter\n"
        't_calls_total{result="accepted"} 3\n'
        't_calls_total{result="Ecs.0603"} 1\n'
        "# HELP t_depth Depth.\n"
        "# TYPE t_depth gauge\n"
        "t_depth 0\n"
    )


def test_label_values_are_escaped_and_parse_back() -> None:
    nasty = 'a "quoted" back\\slash\nnewline'
    assert escape_label(nasty) == 'a \\"quoted\\" back\\\\slash\\nnewline'
    text = render([Family(Definition("t_x", "gauge", "X."), [("", {"v": nasty}, 1.5)])])
    (family,) = text_string_to_metric_families(text)
    (sample,) = family.samples
    assert sample.labels == {"v": nasty}
    assert sample.value == 1.5


def test_histogram_buckets_are_cumulative_with_sum_and_count() -> None:
    # Per-bucket counts as recorded: 2 at <=1, 0 at <=2.5, 3 at <=10, 1 above.
    series: dict[tuple[tuple[str, str], ...], dict[str, float]] = {
        (("result", "success"),): {"1": 2.0, "10": 3.0, "+Inf": 1.0, "sum": 40.5}
    }
    text = render([Family(HIST, histogram_samples(HIST, series))])
    assert 't_seconds_bucket{result="success",le="1"} 2\n' in text
    assert 't_seconds_bucket{result="success",le="2.5"} 2\n' in text
    assert 't_seconds_bucket{result="success",le="10"} 5\n' in text
    assert 't_seconds_bucket{result="success",le="+Inf"} 6\n' in text
    assert 't_seconds_sum{result="success"} 40.5\n' in text
    assert 't_seconds_count{result="success"} 6\n' in text
    (family,) = text_string_to_metric_families(text)
    assert family.type == "histogram"
    buckets = [s.value for s in family.samples if s.name == "t_seconds_bucket"]
    assert buckets == sorted(buckets)


def test_values_format_as_prometheus_reads_them() -> None:
    assert format_value(3.0) == "3"
    assert format_value(0.25) == "0.25"
    assert format_value(math.inf) == "+Inf"
    assert format_value(-math.inf) == "-Inf"
    assert format_value(math.nan) == "NaN"


def test_changeos_results_are_codes_or_the_transport_words() -> None:
    assert changeos_result(None) == "accepted"
    assert changeos_result(Retryable(code="APIGW.0308", message="slow down")) == "APIGW.0308"
    assert changeos_result(Rejected(code="Ecs.0603", message="x")) == "Ecs.0603"
    assert changeos_result(ConfigError(code="APIGW.0301", message="x")) == "APIGW.0301"
    assert changeos_result(Retryable(code="Connection.Failed", message="x")) == "transport_error"
    assert changeos_result(OutcomeUnknown(code="Connection.Lost", message="x")) == (
        "unknown_outcome"
    )
    assert changeos_result(Rejected(code='bad "code"\n' * 5, message="x")) == "other"


def test_the_queue_names_are_the_celery_apps() -> None:
    from workers.app import ALL_QUEUES

    assert CELERY_QUEUES == ALL_QUEUES
