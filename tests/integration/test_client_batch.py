"""asr-client transcribe: many files and long ones, in pieces, with a progress bar, written next to
each input as txt/srt/vtt/json (through the CLI entry point, against a live server)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from app.client.batch import cut_points
from app.client.cli import main
from app.main import create_app
from tests.integration.test_stream import stream_settings, wait_for_ready
from tests.streaming_support import RATE, ToneFactory, live_server, spell
from tests.support import wav_bytes

PHRASES = ["good day", "fine", "bad cab", "dead beef"]


def long_audio() -> np.ndarray:
    """Four phrases, each followed by 1.5 s of silence: about 14 s, so 5 s pieces make several."""
    return np.concatenate([spell(phrase, tail_s=1.5) for phrase in PHRASES])


def test_cuts_fall_in_pauses() -> None:
    pcm = (long_audio() * 32767).astype("<i2")
    starts = cut_points(pcm, 5.0)
    assert len(starts) >= 3 and starts[0] == 0
    for start in starts[1:]:
        assert np.abs(pcm[start - 160 : start + 160]).max() == 0  # silence around every cut


def test_transcribes_many_files_in_pieces_and_writes_each_format(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    long_file, short_file = tmp_path / "long.wav", tmp_path / "short.wav"
    long_file.write_bytes(wav_bytes(long_audio()))
    short_file.write_bytes(wav_bytes(spell("fine", tail_s=0.8)))
    with live_server(create_app(stream_settings(), recognizer_factory=ToneFactory())) as (base, _):
        wait_for_ready(base)
        url = ["--url", f"http://{base}"]
        files = [str(long_file), str(short_file)]
        main([*url, "transcribe", *files, "--format", "txt,srt,vtt,json", "--piece-seconds", "5", "--progress"])
        err = capsys.readouterr().err
        assert "100%" in err and "2/2 files" in err  # the bar, on stderr

        assert (tmp_path / "long.txt").read_text() == " ".join(PHRASES) + "\n"
        assert (tmp_path / "short.txt").read_text() == "fine\n"
        body = json.loads((tmp_path / "long.json").read_text())
        assert [w["word"] for w in body["words"]] == " ".join(PHRASES).split()
        starts = [w["start"] for w in body["words"]]
        assert starts == sorted(starts) and starts[-1] > 10.0  # word times on the file's timeline
        assert body["duration"] == pytest.approx(len(long_audio()) / RATE, abs=0.01)
        srt = (tmp_path / "long.srt").read_text()
        assert srt.startswith("1\n00:00:00,") and "\n4\n" in srt and "dead beef" in srt
        vtt = (tmp_path / "long.vtt").read_text()
        assert vtt.startswith("WEBVTT\n\n00:00:00.") and "--> 00:00:1" in vtt

        # Outputs that exist are kept unless --force.
        (tmp_path / "short.txt").write_text("mine\n")
        main([*url, "transcribe", str(short_file), "--format", "txt"])
        assert "skipped" in capsys.readouterr().err and (tmp_path / "short.txt").read_text() == "mine\n"
        main([*url, "transcribe", str(short_file), "--format", "txt", "--force"])
        assert (tmp_path / "short.txt").read_text() == "fine\n"

        # Without --format the text goes to stdout; a file that is not audio fails alone.
        main([*url, "transcribe", str(long_file), "--piece-seconds", "5"])
        assert capsys.readouterr().out == " ".join(PHRASES) + "\n"
        with pytest.raises(SystemExit, match="1 of 2 files failed"):
            main([*url, "transcribe", __file__, str(short_file)])
        captured = capsys.readouterr()
        assert "cannot read the audio" in captured.err and captured.out.endswith("short.wav: fine\n")
