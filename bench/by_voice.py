"""synth_test's WER per kind of voice, from the JSON of ``bench.peers_accuracy`` runs.

The synthetic test set is a third each espeak-ng's West Midlands accent (``en-gb-x-gbcwmd`` and its
variant voices), flite's ``rms`` (the two voices no training set speaks) and the training voices
(other sentences). Each run's systems are scored per kind, on the rows of the manifest
``data/manifests/synth_test.jsonl`` (each row's ``source``), with the run's own normalised text:

    python -m bench.by_voice bench/results/shipped.json bench/results/tuned.json --names shipped tuned
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import jiwer

from train.data.audio_io import read_manifest
from train.data.voices import HELD_OUT_ESPEAK_LANG, HELD_OUT_FLITE

ROOT = Path(__file__).resolve().parents[1]
KINDS = (f"espeak {HELD_OUT_ESPEAK_LANG} (held out)", f"flite {HELD_OUT_FLITE} (held out)", "training voices")


def voice_kind(source: str) -> str:
    """Which of :data:`KINDS` a manifest row's ``source`` (``engine:voice``) is."""
    if source.startswith(f"espeak:{HELD_OUT_ESPEAK_LANG}"):
        return KINDS[0]
    if source == f"flite:{HELD_OUT_FLITE}":
        return KINDS[1]
    return KINDS[2]


def wer_by_kind(rows: list[dict[str, Any]], kinds: dict[str, str]) -> dict[str, tuple[float, int]]:
    """Corpus WER (%) and utterance count per kind of voice, of rows with a spoken reference."""
    result = {}
    for kind in KINDS:
        mine = [r for r in rows if kinds.get(r["id"]) == kind and r["reference_spoken"]]
        if mine:
            words = jiwer.process_words([r["reference_spoken"] for r in mine], [r["hypothesis_spoken"] for r in mine])
            result[kind] = (100.0 * words.wer, len(mine))
    return result


def table(runs: dict[str, dict[str, Any]], kinds: dict[str, str]) -> str:
    """A markdown table: one line per run and system, one column per kind of voice."""
    lines = ["| run | system | " + " | ".join(KINDS) + " |", "|---|---|" + "---|" * len(KINDS)]
    for run, result in runs.items():
        for system, measured in result["systems"].items():
            rows = measured["sets"].get("synth_test", {}).get("rows", [])
            scores = wer_by_kind(rows, kinds)
            cells = [f"{scores[k][0]:.1f} ({scores[k][1]})" if k in scores else "-" for k in KINDS]
            lines.append(f"| {run} | {system} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, nargs="+", help="JSON files of bench.peers_accuracy")
    parser.add_argument("--names", nargs="+", help="a name per file (default: the file names)")
    parser.add_argument("--manifest", type=Path, default=ROOT / "data" / "manifests" / "synth_test.jsonl")
    args = parser.parse_args(argv)
    names = args.names or [p.stem for p in args.results]
    if len(names) != len(args.results):
        raise SystemExit("give one name per results file")
    kinds = {str(row["id"]): voice_kind(row["source"]) for row in read_manifest(args.manifest)}
    runs = {name: json.loads(path.read_text()) for name, path in zip(names, args.results, strict=True)}
    text = "WER % (utterances) on synth_test per kind of voice\n\n" + table(runs, kinds)
    print(text)
    return text


if __name__ == "__main__":
    main()
