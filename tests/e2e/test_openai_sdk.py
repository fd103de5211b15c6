"""The official OpenAI Python SDK against the real server (a subprocess) with the shipped LM."""

from __future__ import annotations

import io
import itertools
import re
import signal
from collections.abc import Iterator

import openai
import pytest

from tests.e2e.server import ROOT, running_server
from tests.support import make_random_bundle, tone, wav_bytes

LM_DIR = ROOT / "models" / "en-small" / "lm"
pytestmark = pytest.mark.e2e
TIME = r"(\d\d):(\d\d):(\d\d)[,.](\d{3})"
CUE_TIMES = re.compile(rf"{TIME} --> {TIME}")


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A server on a small random model, beam search with the shipped LM by default."""
    folder = tmp_path_factory.mktemp("server")
    bundle = make_random_bundle(folder / "tiny")
    with running_server(bundle, folder, ASR_LM_PATH=str(LM_DIR), ASR_CHUNK_SECONDS="4") as live:
        yield live.base_url
        live.proc.send_signal(signal.SIGTERM)
        assert live.proc.wait(timeout=30) == 0


@pytest.fixture(scope="module")
def client(base_url: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key="not-needed", max_retries=0, timeout=60)


def audio(seconds: float = 3.0) -> tuple[str, io.BytesIO, str]:
    return ("speech.wav", io.BytesIO(wav_bytes(tone(seconds))), "audio/wav")


def to_seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


def cue_spans(text: str) -> list[tuple[float, float]]:
    return [(to_seconds(*m.groups()[:4]), to_seconds(*m.groups()[4:])) for m in CUE_TIMES.finditer(text)]


def test_models_list(client: openai.OpenAI) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny", "whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"]


def test_json(client: openai.OpenAI) -> None:
    result = client.audio.transcriptions.create(model="tiny", file=audio(), language="en")
    assert isinstance(result, openai.types.audio.Transcription) and isinstance(result.text, str)
    assert re.fullmatch(r"[a-z' ]*", result.text)


def test_text(client: openai.OpenAI) -> None:
    result = client.audio.transcriptions.create(model="whisper-1", file=audio(), response_format="text")
    assert isinstance(result, str) and result.endswith("\n")


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_subtitles_parse_with_monotone_times(client: openai.OpenAI, fmt: str) -> None:
    result = client.audio.transcriptions.create(model="tiny", file=audio(12.0), response_format=fmt)  # type: ignore[call-overload]
    assert isinstance(result, str)
    if fmt == "vtt":
        assert result.startswith("WEBVTT")
    spans = cue_spans(result)
    assert spans  # the seeded random model says a word or two in every piece
    for start, end in spans:
        assert 0 <= start < end <= 12.0
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end <= start


def test_verbose_json(client: openai.OpenAI) -> None:
    result = client.audio.transcriptions.create(
        model="tiny", file=audio(6.0), response_format="verbose_json", timestamp_granularities=["word", "segment"]
    )
    assert result.duration == pytest.approx(6.0, abs=0.05) and result.language == "english"
    words = result.words or []
    assert [w.word for w in words] == result.text.split()
    assert " ".join(s.text for s in result.segments or []) == result.text
    times = [t for w in words for t in (w.start, w.end)]
    assert times == sorted(times) and all(0 <= t <= 6.0 for t in times)


def test_stream(client: openai.OpenAI) -> None:
    stream = client.audio.transcriptions.create(model="tiny", file=audio(8.0), stream=True)
    events = list(stream)
    assert events and events[-1].type == "transcript.text.done"
    deltas = [e.delta for e in events[:-1] if e.type == "transcript.text.delta"]
    assert len(deltas) == len(events) - 1
    assert "".join(deltas) == events[-1].text


def test_decoding_options_as_extra_fields(client: openai.OpenAI) -> None:
    result = client.audio.transcriptions.create(
        model="tiny", file=audio(), extra_body={"decoder": "greedy", "word_timestamps": "true"}
    )
    assert isinstance(result.text, str)
    beam = client.audio.transcriptions.create(model="tiny", file=audio(), extra_body={"hotwords": "kubelet:5"})
    assert isinstance(beam.text, str)


def test_bad_options_raise_the_sdk_errors(client: openai.OpenAI) -> None:
    with pytest.raises(openai.UnprocessableEntityError, match="response_format"):
        client.audio.transcriptions.create(model="tiny", file=audio(), response_format="diarized_json")
    with pytest.raises(openai.UnprocessableEntityError, match="beam_size"):
        client.audio.transcriptions.create(model="tiny", file=audio(), extra_body={"beam_size": "0"})
    with pytest.raises(openai.UnprocessableEntityError, match="at most 100 hotwords"):
        hotwords = ",".join(f"w{i}" for i in range(101))
        client.audio.transcriptions.create(model="tiny", file=audio(), extra_body={"hotwords": hotwords})
