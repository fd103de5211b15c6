"""Shared fixtures: the full app in-process, with its lifespan and batcher, over a fake model."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.support import FakeFactory

TESTS = Path(__file__).parent

FOLDER_MARKERS = {
    "unit": "unit",
    "integration": "integration",
    "e2e": "e2e",
    "abuse": "abuse_suite",  # ``abuse`` itself marks only the heavy cases, run by `make test-abuse`
    "browser": "browser",
    "gpu": "gpu",
}
"""The marker every test in a folder of ``tests/`` gets (registered in pyproject.toml)."""


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test by its folder, so ``-m unit`` (or ``integration``, ...) selects a folder."""
    for item in items:
        folder = item.path.relative_to(TESTS).parts[0] if item.path.is_relative_to(TESTS) else ""
        marker = FOLDER_MARKERS.get(folder)
        if marker is not None:
            item.add_marker(marker)


def wait_ready(client: TestClient, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if client.get("/readyz").status_code == 200:
            return
        time.sleep(0.02)
    raise AssertionError(f"app not ready after {timeout_s} s: {client.get('/readyz').json()}")


@pytest.fixture
def fake() -> FakeFactory:
    return FakeFactory()


@pytest.fixture
def settings() -> Settings:
    return Settings(warmup=False, max_wait_ms=20, log_json=False)


@pytest.fixture
def client(fake: FakeFactory, settings: Settings) -> Iterator[TestClient]:
    """A started app (model loaded, batcher running) over the fake model."""
    app = create_app(settings, recognizer_factory=fake)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        wait_ready(test_client)
        yield test_client
