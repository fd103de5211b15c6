"""Long recordings: utterances joined into recordings of a minute or more, transcribed whole, cut
where the server cuts them (``ASR_SPLIT``: at pauses or by length), against the same utterances
transcribed one by one, and against faster-whisper on the same recordings.

Recordings are built from the sets as they are, in a fixed order, nothing between the clips:
``cv100`` in runs of 12 clips (a new speaker, microphone and level every few seconds, as in a
meeting recorded by many phones), speechocean762 ``test/`` one recording per speaker (all that
speaker's utterances, one microphone). The dev sets are joined the same ways (so762_dev per speaker
and, as ``so762_dev_mixed``, in runs of 12 of any speaker; synth_dev and piper_dev in runs of 12);
the server's cutting settings were chosen on them::

    python -m bench.long_form                       # test recordings, the server's cutting both ways
    python -m bench.long_form --sets dev --min-pieces 0 3 6 10 --systems ours-attention,ours-beam
    python -m bench.long_form --sets cv100 --systems ours-attention --splits length --clips-per-piece 1 2 3

WER uses ``spoken_form`` on both sides, as ``bench.peers_accuracy`` does; "D" is the deletions.
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import jiwer
import numpy as np

from app.asr.text import spoken_form
from bench import our_systems
from bench.peers_accuracy import SYSTEMS, Utterance, load_set
from bench.report import ROOT, fmt, machine, publish, table
from train.data.audio_io import read_audio, read_manifest

RUN = 12  # clips per recording where a set is not joined per speaker
DEV = ("so762_dev", "so762_dev_mixed", "synth_dev", "piper_dev")
TEST = ("cv100", "so762_test")


def grouped(name: str, data: Path, recordings: int) -> list[list[Utterance]]:
    """The utterances of ``name``'s first ``recordings`` recordings, in order."""
    if name in TEST:
        utterances = load_set(name, data, None)
        speaker = (lambda u: u.id[:4]) if name == "so762_test" else None
    else:  # a dev manifest; "_mixed": in runs of clips, whoever speaks them
        rows = read_manifest(ROOT / "data" / "manifests" / f"{name.removesuffix('_mixed')}.jsonl")
        utterances = [Utterance(str(r["id"]), r["audio"], r["text"]) for r in rows]
        sources = {str(r["id"]): str(r["source"]) for r in rows}
        speaker = (lambda u: sources[u.id]) if name == "so762_dev" else None
    if speaker is None:
        groups = [utterances[i : i + RUN] for i in range(0, len(utterances) - RUN + 1, RUN)]
    else:
        by_speaker: dict[str, list[Utterance]] = defaultdict(list)
        for u in utterances:
            by_speaker[speaker(u)].append(u)
        groups = [by_speaker[k] for k in sorted(by_speaker)]
    return groups[:recordings]


def wer(references: list[str], hypotheses: list[str]) -> dict[str, Any]:
    words = jiwer.process_words(references, [h or "<empty>" for h in hypotheses])
    return {"wer": 100 * words.wer, "deletions": words.deletions, "words": sum(len(r.split()) for r in references)}


def measure(
    system: Any, recordings: list[list[np.ndarray]], references: list[str], clips: bool, per_piece: int = 0
) -> dict[str, Any]:
    """WER of ``system`` on the joined recordings (and, with ``clips``, on their clips one by one);
    ``per_piece``: each recording decoded in pieces of that many whole clips, cut between them."""
    started = time.perf_counter()
    if per_piece:
        whole = [
            spoken_form(
                system.pieces_text([np.concatenate(waves[i : i + per_piece]) for i in range(0, len(waves), per_piece)])
            )
            for waves in recordings
        ]
    else:
        whole = [spoken_form(system.transcribe(np.concatenate(waves))) for waves in recordings]
    result = {"long": wer(references, whole), "seconds": time.perf_counter() - started, "hypotheses": whole}
    if clips:
        one_by_one = [" ".join(spoken_form(system.transcribe(w)) for w in waves) for waves in recordings]
        result["clips"] = wer(references, one_by_one)
    return result


def variants(names: list[str], splits: list[str], min_pieces: list[float]) -> list[tuple[str, str, float | None]]:
    """(system, split, shortest piece at pauses or None for the server's) to run."""
    out: list[tuple[str, str, float | None]] = []
    for name in names:
        if not name.startswith("ours-"):
            out.append((name, "", None))
            continue
        for split in splits:
            pieces: list[float | None] = [None] if split != "pauses" or not min_pieces else list(min_pieces)
            out += [(name, split, piece) for piece in pieces]
    return out


def label(system: str, split: str, piece: float | None) -> str:
    if not split:
        return system
    return f"{system}, {split}" + ("" if piece is None else f" (shortest {piece:g} s)")


def render(result: dict[str, Any], command: str, json_path: Path, host: dict[str, Any]) -> str:
    names = list(result["sets"])
    with_clips = [n for n in names if any("clips" in runs[n] for runs in result["runs"].values())]
    header = ["system, cutting", *[f"{n} whole (D)" for n in names], "mean whole"]
    header += [f"{n} clip by clip" for n in with_clips]
    rows = []
    for key, runs in result["runs"].items():
        whole = [f"{fmt(runs[n]['long']['wer'], 1)} ({runs[n]['long']['deletions']})" for n in names]
        mean = fmt(float(np.mean([runs[n]["long"]["wer"] for n in names])), 2)
        clips = [fmt(runs[n]["clips"]["wer"], 1) if "clips" in runs[n] else "" for n in with_clips]
        rows.append([key, *whole, mean, *clips])
    sizes = ", ".join(
        f"{n}: {s['recordings']} recordings, {s['minutes']:.1f} min, {s['words']} words"
        for n, s in result["sets"].items()
    )
    return "\n".join(
        [
            f"#### Long recordings, cut at pauses or by length: {', '.join(names)}",
            "",
            f"`{command}` ({host['cores']} cores, load {host['load_average'][0]}; JSON: {json_path})",
            "",
            f"Recordings: {sizes}. WER % of each recording transcribed whole, its deletions in brackets"
            + (", and of the same clips transcribed one by one." if with_clips else "."),
            "",
            table(header, rows),
        ]
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sets", default="test", help="test, dev, or set names joined by commas")
    parser.add_argument("--systems", default="ours-attention,ours-beam,faster-whisper")
    parser.add_argument("--splits", default="auto,pauses,length", help="ASR_SPLIT settings to run ours with")
    parser.add_argument("--min-pieces", type=float, nargs="*", default=[], help="shortest pieces to try (s)")
    parser.add_argument("--recordings", type=int, default=8, help="recordings per set")
    parser.add_argument("--clips", action="store_true", help="also transcribe every clip on its own")
    parser.add_argument(
        "--clips-per-piece", type=int, nargs="*", default=[], help="also: ours on pieces of K whole clips (K <= 3)"
    )
    parser.add_argument("--model", type=Path, default=our_systems.DEFAULT_BUNDLE)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--whisper-model", type=Path, default=None)
    parser.add_argument("--docs", action="store_true", help="write the section of docs/benchmarks.md")
    args = parser.parse_args(argv)
    names = {"test": list(TEST), "dev": list(DEV)}.get(args.sets, args.sets.split(","))
    sets, audio = {}, {}
    for name in names:
        groups = grouped(name, args.data, args.recordings)
        audio[name] = [[read_audio(u.audio) for u in g] for g in groups]
        references = [" ".join(spoken_form(u.text) for u in g) for g in groups]
        seconds = sum(w.shape[0] for waves in audio[name] for w in waves) / 16000
        sets[name] = {"recordings": len(groups), "minutes": seconds / 60, "references": references}
        sets[name]["words"] = sum(len(r.split()) for r in references)
    runs: dict[str, dict[str, Any]] = {}
    for system_name, group in itertools.groupby(
        variants(args.systems.split(","), args.splits.split(","), args.min_pieces), key=lambda v: v[0]
    ):
        system = SYSTEMS[system_name](argparse.Namespace(**vars(args), split="auto"))
        for _, split, piece in group:
            if isinstance(system, our_systems.OurModel):
                system.split, system.shortest = split, piece
            key = label(system_name, split, piece)
            runs[key] = {n: measure(system, audio[n], sets[n]["references"], args.clips) for n in names}
            print(key, {n: round(r["long"]["wer"], 2) for n, r in runs[key].items()}, flush=True)
        for count in args.clips_per_piece if isinstance(system, our_systems.OurModel) else []:
            key = f"{system_name}, {count} whole clip{'s' if count > 1 else ''} per piece"
            runs[key] = {n: measure(system, audio[n], sets[n]["references"], False, count) for n in names}
            print(key, {n: round(r["long"]["wer"], 2) for n, r in runs[key].items()}, flush=True)
        system.close()
    result = {"model": str(args.model), "machine": machine(), "sets": sets, "runs": runs}
    section = "long_form" if args.sets == "test" else f"long_form_{args.sets.replace(',', '_')}"
    publish("bench.long_form", section, result, render, args.docs)
    return result


if __name__ == "__main__":
    main()
