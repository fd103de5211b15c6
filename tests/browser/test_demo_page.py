"""The demo page in a real browser: Debian's chromium, headless, with a fake microphone that plays
a WAV file, against a live server over the tone model. Run with `make test-browser`."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.main import create_app
from tests.integration.test_stream import stream_settings, wait_for_ready
from tests.streaming_support import ToneFactory, live_server, spell
from tests.support import FakeSecondPass, wav_bytes

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
sync_api = pytest.importorskip("playwright.sync_api", reason="run `make test-browser` to install playwright")


@pytest.fixture
def base_url() -> Iterator[str]:
    with live_server(create_app(stream_settings(), recognizer_factory=ToneFactory())) as (base, _):
        wait_for_ready(base)
        yield f"http://{base}"


@pytest.fixture
def speech(tmp_path: Path) -> Path:
    path = tmp_path / "speech.wav"
    path.write_bytes(wav_bytes(spell("hello world", lead_s=1.0, tail_s=1.5)))
    return path


def launch(playwright: sync_api.Playwright, microphone: Path, *extra: str) -> sync_api.Browser:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make test-browser` (scripts/install-browser.sh)")
    return playwright.chromium.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=[
            "--use-fake-ui-for-media-stream",
            "--use-fake-device-for-media-stream",
            f"--use-file-for-fake-audio-capture={microphone}",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            *extra,
        ],
    )


def test_microphone_partials_and_finals_appear(base_url: str, speech: Path) -> None:
    with sync_api.sync_playwright() as playwright:
        browser = launch(playwright, speech)
        try:
            page = browser.new_page()
            page.goto(f"{base_url}/")
            sync_api.expect(page.locator("#mic-insecure")).to_be_hidden()  # localhost is a secure context
            page.click("#start")
            sync_api.expect(page.locator("#mic-status")).to_have_text("listening", timeout=20_000)
            # The fake microphone loops the file: wait for a final of one whole pass.
            finals = page.locator("#transcript .final .text", has_text="hello world")
            sync_api.expect(finals.first).to_have_text("hello world", timeout=30_000)
            page.click("#stop")
            sync_api.expect(page.locator("#mic-status")).to_have_text("closed (1000)", timeout=20_000)
        finally:
            browser.close()


def test_file_upload_shows_the_transcript(base_url: str, speech: Path) -> None:
    with sync_api.sync_playwright() as playwright:
        browser = launch(playwright, speech)
        try:
            page = browser.new_page()
            page.goto(f"{base_url}/")
            page.set_input_files("#file", str(speech))
            page.click("#upload")
            sync_api.expect(page.locator("#upload-result")).to_have_text("hello world", timeout=20_000)
            sync_api.expect(page.locator("#upload-status")).to_contain_text("4.8 s of audio")
        finally:
            browser.close()


def test_page_from_another_address_explains_the_secure_context_rule(base_url: str, speech: Path) -> None:
    """Opened as http://<a machine's name>, the page has no microphone API: it says why and how to reach
    it (an SSH tunnel to localhost, or HTTPS), and uploads still work."""
    port = base_url.rsplit(":", 1)[1]
    with sync_api.sync_playwright() as playwright:
        browser = launch(playwright, speech, "--host-resolver-rules=MAP asr-box.test 127.0.0.1")
        try:
            page = browser.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"http://asr-box.test:{port}/")
            assert page.evaluate("window.isSecureContext") is False
            sync_api.expect(page.locator("#mic-insecure")).to_be_visible()
            sync_api.expect(page.locator("#mic-insecure")).to_contain_text("https://")
            sync_api.expect(page.locator("#tunnel-command")).to_have_text(
                f"ssh -L {port}:localhost:{port} user@asr-box.test"
            )
            sync_api.expect(page.locator("#start")).to_be_disabled()
            sync_api.expect(page.locator("#mic-status")).to_contain_text("not secure")
            page.set_input_files("#file", str(speech))
            page.click("#upload")
            sync_api.expect(page.locator("#upload-result")).to_have_text("hello world", timeout=20_000)
            assert errors == []  # no "Cannot read properties of undefined (reading 'getUserMedia')"
        finally:
            browser.close()


@pytest.mark.parametrize("page_path,rendered", [("/docs", ".swagger-ui .info .title"), ("/redoc", "h1")])
def test_api_docs_render_with_no_internet(base_url: str, speech: Path, page_path: str, rendered: str) -> None:
    """/docs and /redoc render with every request off this server refused (as on an offline machine)."""
    with sync_api.sync_playwright() as playwright:
        browser = launch(playwright, speech)
        try:
            page = browser.new_page()
            elsewhere: list[str] = []

            def offline(route: sync_api.Route) -> None:
                if route.request.url.startswith(base_url):
                    route.continue_()
                else:
                    elsewhere.append(route.request.url)
                    route.abort()

            page.route("**/*", offline)
            page.goto(f"{base_url}{page_path}")
            sync_api.expect(page.locator(rendered).first).to_contain_text("ASR server", timeout=20_000)
            assert elsewhere == []
        finally:
            browser.close()


def test_names_and_terms_reach_the_second_pass_of_uploads_and_streams(speech: Path) -> None:
    second = FakeSecondPass("Hello, Jayme.")
    app = create_app(stream_settings(), recognizer_factory=ToneFactory(second_pass=second))
    with live_server(app) as (base, _), sync_api.sync_playwright() as playwright:
        wait_for_ready(base)
        browser = launch(playwright, speech)
        try:
            page = browser.new_page()
            page.goto(f"http://{base}/")
            page.fill("#prompt", "Jayme, kubelet")
            page.set_input_files("#file", str(speech))
            page.click("#upload")
            sync_api.expect(page.locator("#upload-result")).to_have_text("hello jayme", timeout=20_000)
            page.click("#start")
            finals = page.locator("#transcript .final .text", has_text="hello jayme")
            sync_api.expect(finals.first).to_have_text("hello jayme", timeout=30_000)
            page.click("#stop")
        finally:
            browser.close()
    assert second.prompts and set(second.prompts) == {"Jayme, kubelet"}
