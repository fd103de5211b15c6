"""asr-client against a live server over the tone model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.client.cli import main
from app.main import create_app
from tests.integration.test_stream import stream_settings, wait_for_ready
from tests.streaming_support import ToneFactory, live_server, spell
from tests.support import wav_bytes


def test_cli_transcribes_and_streams_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    audio = tmp_path / "talk.wav"
    audio.write_bytes(wav_bytes(spell("good day", tail_s=0.8)))
    with live_server(create_app(stream_settings(), recognizer_factory=ToneFactory())) as (base, _):
        wait_for_ready(base)
        main(["--url", f"http://{base}", "transcribe", str(audio)])
        assert capsys.readouterr().out == "good day\n"
        main(["--url", f"http://{base}", "stream", str(audio)])
        # The last tone ends at 1.94 s; the utterance ends 600 ms later, on a 100 ms chunk.
        assert capsys.readouterr().out == "[   0.00 -    2.60] good day\n"
        main(["--url", f"http://{base}", "--json", "stream", str(audio), "--chunk-ms", "50"])
        messages = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert messages[-1]["type"] == "final" and messages[-1]["text"] == "good day"
        with pytest.raises(SystemExit, match="cannot read the audio"):  # the client decodes (batch.py)
            main(["--url", f"http://{base}", "transcribe", __file__])
