"""The peers' accuracy harness without the models: test sets, scoring, clips and a whole run with a fake system."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from bench import peers_accuracy as pa

RATE = 16000


class FixedSystem:
    """Answers with fixed strings, one per call, in order."""

    name = "fixed"

    def __init__(self, answers: list[str]) -> None:
        self.answers = list(answers)
        self.closed = False

    def transcribe(self, wave: np.ndarray) -> str:
        return self.answers.pop(0) if self.answers else ""

    def close(self) -> None:
        self.closed = True


def tone(path: Path, seconds: float) -> None:
    t = np.arange(int(seconds * RATE)) / RATE
    sf.write(str(path), (0.1 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), RATE)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data root with a three-row cv100 manifest and a two-utterance speechocean762 test/ folder."""
    cv = tmp_path / "cv100"
    (cv / "audio").mkdir(parents=True)
    rows = [("clip_c", "Good morning, Dr. Smith!", 4.0), ("clip_a", "I have 3 cats.", 4.0), ("clip_b", "", 4.0)]
    for stem, _, seconds in rows:
        tone(cv / "audio" / f"{stem}.wav", seconds)
    lines = [json.dumps({"audio": f"audio/{s}.wav", "text": t, "duration": d}) for s, t, d in rows]
    (cv / "manifest.jsonl").write_text("\n".join(lines) + "\n")
    so = tmp_path / "speechocean762"
    (so / "test").mkdir(parents=True)
    (so / "audio").mkdir()
    for utt in ("000020002", "000010001"):
        tone(so / "audio" / f"{utt}.wav", 1.0)
    (so / "test" / "text").write_text("000020002\tKATE LOVES CHINA\n000010001\tMARK IS GOING\n")
    (so / "test" / "audio.scp").write_text("000020002 audio/000020002.wav\n000010001 audio/000010001.wav\n")
    (so / "test" / "utt2spk").write_text("000020002 0002\n000010001 0001\n")
    return tmp_path


def test_sets_are_sorted_by_id_and_limited(data: Path) -> None:
    cv = pa.load_set("cv100", data, limit=2)
    assert [u.id for u in cv] == ["clip_a", "clip_b"]
    assert cv[0].text == "I have 3 cats." and Path(cv[0].audio) == data / "cv100" / "audio" / "clip_a.wav"
    so = pa.load_set("so762_test", data, limit=None)
    assert [(u.id, u.text) for u in so] == [("000010001", "mark is going"), ("000020002", "kate loves china")]
    assert Path(so[0].audio).is_file()


def test_scoring_normalises_both_sides_and_skips_empty_references(data: Path) -> None:
    utterances = pa.load_set("cv100", data, limit=None)  # clip_a, clip_b (empty reference), clip_c
    waves = [np.zeros(2 * RATE, np.float32)] * 3
    system = FixedSystem(["i have three cats", "some words", "Good morning, doctor"])
    result = pa.evaluate(system, utterances, waves)
    # 8 reference words, one deleted ("smith"); the hypothesis against the empty reference is not counted
    assert result["wer_percent"] == pytest.approx(12.5)
    assert (result["utterances"], result["scored"]) == (3, 2)
    assert result["audio_hours"] == pytest.approx(6 / 3600)
    assert result["rtf"] is not None and result["rtf"] >= 0
    assert [r["hypothesis"] for r in result["rows"]] == ["i have three cats", "some words", "Good morning, doctor"]
    assert result["rows"][2]["reference_spoken"] == "good morning doctor smith"


def test_speed_clips_join_and_cut(data: Path) -> None:
    utterances = pa.load_set("cv100", data, limit=None)  # 12 s of audio
    clips = pa.speed_clips(utterances, count=5, seconds=5.0)
    assert [c.size for c in clips] == [5 * RATE, 5 * RATE]
    timed = pa.time_clips(FixedSystem([]), clips)
    assert timed["clips"] == 2 and timed["clip_s"] == 5.0 and len(timed["times_s"]) == 2


def test_a_registered_system_runs_end_to_end(data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[FixedSystem] = []

    def factory(args: argparse.Namespace) -> FixedSystem:
        made.append(FixedSystem(["warm up", "mark is going", "kate loves china"]))
        return made[-1]

    monkeypatch.setitem(pa.SYSTEMS, "fixed", factory)
    out = tmp_path / "out.json"
    argv = ["--systems", "fixed", "--sets", "so762_test", "--data", str(data), "--speed-clips", "1", "--json", str(out)]
    pa.main(argv)
    result = json.loads(out.read_text())
    assert made[0].closed
    assert result["systems"]["fixed"]["sets"]["so762_test"]["wer_percent"] == pytest.approx(0.0)
    assert result["systems"]["fixed"]["speed"]["clips"] == 1
    assert "--systems fixed" in result["command"] and result["date"]
    with pytest.raises(SystemExit):
        pa.parse(["--systems", "nope"])
