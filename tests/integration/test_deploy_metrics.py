"""Every metric the Grafana dashboard, the alert rules and the autoscaling rule query is served
at /metrics (the static half of this check runs in `make check-deploy`)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

from fastapi.testclient import TestClient

ROOT = Path(__file__).resolve().parents[2]


def load_checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_deploy", ROOT / "scripts" / "check_deploy.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("check_deploy", module)
    spec.loader.exec_module(module)
    return module


def test_every_metric_queried_by_the_deployment_is_served(client: TestClient) -> None:
    checker = load_checker()
    response = client.get("/metrics")
    assert response.status_code == 200
    served = checker.exposed_metric_names(response.text)
    for source, queries in checker.promql_sources().items():
        queried = checker.referenced_metrics(queries)
        assert queried, f"{source}: no metrics found in its queries"
        missing = sorted(queried - served)
        assert not missing, f"{source} queries metrics that /metrics does not serve: {missing}"


def test_the_dashboard_covers_the_operating_signals() -> None:
    checker = load_checker()
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/asr.json").read_text())
    queried = checker.referenced_metrics(checker.dashboard_queries(dashboard))
    for needed in (
        "asr_audio_processed_seconds_total",
        "asr_http_request_duration_seconds_bucket",
        "asr_queue_depth_items",
        "asr_queue_depth_audio_seconds",
        "asr_queue_wait_seconds_bucket",
        "asr_batch_size_sum",
        "asr_batch_fill_ratio_sum",
        "asr_real_time_factor_bucket",
        "asr_active_streams",
        "asr_errors_total",
    ):
        assert needed in queried, f"the dashboard has no panel on {needed}"
