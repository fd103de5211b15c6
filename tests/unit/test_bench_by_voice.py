"""synth_test's WER per kind of voice (bench.by_voice), from a peers_accuracy JSON."""

from __future__ import annotations

import json
from pathlib import Path

from bench import by_voice


def test_rows_are_scored_per_kind_of_voice(tmp_path: Path) -> None:
    manifest = tmp_path / "synth_test.jsonl"
    sources = {"a": "espeak:en-gb-x-gbcwmd+m3", "b": "flite:rms", "c": "espeak:en-us+f2", "d": "flite:kal"}
    manifest.write_text(
        "".join(
            json.dumps({"id": i, "audio": f"{i}.flac", "text": "x", "source": s}) + "\n" for i, s in sources.items()
        )
    )
    rows = [
        {"id": "a", "reference_spoken": "one two", "hypothesis_spoken": "one too"},
        {"id": "b", "reference_spoken": "three four", "hypothesis_spoken": "three four"},
        {"id": "c", "reference_spoken": "five six", "hypothesis_spoken": "six"},
        {"id": "d", "reference_spoken": "seven eight", "hypothesis_spoken": "seven eight"},
    ]
    result = {"systems": {"ours-beam": {"sets": {"synth_test": {"rows": rows}}}}}
    path = tmp_path / "run.json"
    path.write_text(json.dumps(result))
    text = by_voice.main([str(path), "--names", "shipped", "--manifest", str(manifest)])
    assert "| shipped | ours-beam | 50.0 (1) | 0.0 (1) | 25.0 (2) |" in text
    assert by_voice.voice_kind("espeak:en-gb-x-gbcwmd") == by_voice.KINDS[0]
    assert by_voice.voice_kind("espeak:en-gb-scotland") == by_voice.KINDS[2]
