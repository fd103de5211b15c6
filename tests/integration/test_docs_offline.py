"""/docs and /redoc load every script, style and icon from this server (they work offline)."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.main import create_app
from tests.support import FakeFactory

URL_ATTRIBUTES = re.compile(r"""(?:src|href|spec-url)\s*=\s*["']([^"']+)["']|(?:url|spec-url)\s*:\s*["']([^"']+)["']""")
EXPECTED_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png", ".json": "application/json"}


@pytest.fixture
def docs_client(fake: FakeFactory) -> Iterator[TestClient]:
    app = create_app(Settings(warmup=False, log_json=False), recognizer_factory=fake)
    with TestClient(app) as client:  # the pages need no model: no wait for readiness
        yield client


def referenced_urls(html: str) -> set[str]:
    return {a or b for a, b in URL_ATTRIBUTES.findall(html)}


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_page_references_only_local_urls_that_answer(docs_client: TestClient, page: str) -> None:
    response = docs_client.get(page)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in response.headers["content-security-policy"]  # nothing from elsewhere
    urls = referenced_urls(response.text)
    assert any(url.endswith(".js") for url in urls), urls  # the page's script was found
    assert "/openapi.json" in urls or "/openapi.json" in response.text
    for url in urls:
        assert url.startswith("/") and not url.startswith("//"), f"{page} loads {url} from elsewhere"
        asset = docs_client.get(url)
        assert asset.status_code == 200, url
        suffix = url[url.rfind(".") :]
        assert EXPECTED_TYPES.get(suffix, "") in asset.headers["content-type"], (url, asset.headers["content-type"])
        assert len(asset.content) > 1000, url


def test_swagger_ui_is_version_5_which_reads_openapi_3_1(docs_client: TestClient) -> None:
    bundle = docs_client.get("/docs/assets/swagger-ui-bundle.js").text
    assert docs_client.get("/openapi.json").json()["openapi"].startswith("3.1")
    assert re.search(r'"5\.\d+\.\d+"', bundle)  # Swagger UI 4 cannot render an OpenAPI 3.1 document


def test_docs_assets_follow_the_docs_access_setting(fake: FakeFactory) -> None:
    settings = Settings(warmup=False, log_json=False, api_keys="k" * 32, docs_access="key")
    with TestClient(create_app(settings, recognizer_factory=fake)) as client:
        assert client.get("/docs/assets/swagger-ui-bundle.js").status_code == 401
        key = {"Authorization": f"Bearer {'k' * 32}"}
        assert client.get("/docs/assets/swagger-ui-bundle.js", headers=key).status_code == 200
    closed = Settings(warmup=False, log_json=False, docs_access="closed")
    with TestClient(create_app(closed, recognizer_factory=fake)) as client:
        assert client.get("/docs").status_code == 404
        assert client.get("/docs/assets/redoc.standalone.js").status_code == 404
