"""Evaluate a model (``asr-eval``): greedy WER and CER per test set, fp32 and int8, as JSON and a table.

Each runtime is the server's recognizer (:func:`app.asr.recognizer.open_recognizer`, as
``ASR_RUNTIME``/``ASR_PRECISION`` choose it on the CPU) with the server's cutting, greedy decoder
and stitching (:func:`train.scoring.transcribe`): the WER measured is the WER served.

Example::

    asr-eval --model models/en-small \\
        --set synth_test=data/manifests/synth_test.jsonl --set so762_test=data/manifests/so762_test.jsonl \\
        --unseen so762_test --train-manifests data/manifests/synth_train.jsonl data/manifests/so762_train.jsonl \\
        --int8 --json runs/en-small/eval.json --markdown runs/en-small/eval.md

``--unseen NAME`` adds ``NAME_unseen``: the utterances of NAME whose sentence never occurs in the
training manifests.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from app.asr.bundle import WEIGHTS_FILE, Bundle, load_bundle
from app.asr.onnx_int8 import quantize_onnx_int8
from app.asr.recognizer import Recognizer
from app.asr.runtimes import export_onnx
from app.asr.slim.graphs import ctc_network
from app.asr.text import normalize_text
from app.asr.torch_recognizer import build_recognizer
from app.asr.whisper.base import base_file, load_base
from app.asr.whisper.model import WhisperCTC
from train.checkpoint import checkpoint_bundle
from train.data.audio_io import read_manifest
from train.data.dataset import load_utterances
from train.data.voices import HELD_OUT_ESPEAK_LANG, HELD_OUT_FLITE
from train.scoring import CHUNK_SECONDS, Score, score, transcribe

logger = logging.getLogger(__name__)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="bundle folder")
    source.add_argument("--checkpoint", type=Path, help="training checkpoint (.pt)")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=MANIFEST", help="test set (repeatable)")
    parser.add_argument("--unseen", action="append", default=[], help="also score NAME on unseen sentences")
    parser.add_argument("--train-manifests", nargs="*", default=[], type=Path, help="training text for --unseen")
    parser.add_argument("--int8", action="store_true", help="also score the int8 ONNX model")
    parser.add_argument("--runtime", default="auto", help="the fp32 runtime, as ASR_RUNTIME: auto, torch, onnx")
    parser.add_argument("--chunk-seconds", type=float, default=CHUNK_SECONDS, help="as ASR_CHUNK_SECONDS")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="write results here")
    parser.add_argument("--markdown", type=Path, default=None, help="write a markdown table here")
    return parser.parse_args(argv)


def is_held_out_voice(source: str) -> bool:
    """True for the synthetic voices that never occur in training."""
    return source.startswith(f"espeak:{HELD_OUT_ESPEAK_LANG}") or source == f"flite:{HELD_OUT_FLITE}"


def build_sets(args: argparse.Namespace) -> dict[str, tuple[list[np.ndarray], list[str], list[str]]]:
    """name -> (waveforms, references, sources), with the ``_unseen`` subsets added."""
    seen: set[str] = set()
    for manifest in args.train_manifests:
        seen |= {normalize_text(r["text"]) for r in read_manifest(manifest)}
    sets = {}
    for spec in args.set:
        name, _, path = spec.partition("=")
        utts = load_utterances(Path(path), max_seconds=600.0, threads=args.threads)
        waves = [u.audio.astype(np.float32) / 32768.0 for u in utts]
        sets[name] = (waves, [u.text for u in utts], [u.source for u in utts])
        if name in args.unseen:
            keep = [i for i, u in enumerate(utts) if u.text not in seen]
            sets[f"{name}_unseen"] = (
                [waves[i] for i in keep],
                [utts[i].text for i in keep],
                [utts[i].source for i in keep],
            )
    return sets


def score_runtime(
    recognizer: Recognizer, sets: dict[str, Any], chunk_seconds: float = CHUNK_SECONDS
) -> dict[str, dict[str, Any]]:
    """Score every set with one served recognizer; synthetic sets also get a held-out-voice breakdown."""
    results: dict[str, dict[str, Any]] = {}
    for name, (waves, refs, sources) in sets.items():
        started = time.time()
        hyps = transcribe(recognizer, waves, chunk_seconds)
        seconds = sum(w.size for w in waves) / recognizer.config.sample_rate
        results[name] = _as_dict(score(refs, hyps, seconds))
        results[name]["rtf_x"] = round(seconds / max(time.time() - started, 1e-9), 1)
        held = [is_held_out_voice(s) for s in sources]
        if any(held) and not all(held):
            for label, wanted in (("held_out_voices", True), ("training_voices", False)):
                idx = [i for i, h in enumerate(held) if h == wanted]
                results[f"{name}:{label}"] = _as_dict(score([refs[i] for i in idx], [hyps[i] for i in idx]))
        logger.info("%s: %s", name, results[name])
    return results


def _as_dict(s: Score) -> dict[str, Any]:
    return {"wer": round(s.wer, 4), "cer": round(s.cer, 4), "utterances": s.utterances, "hours": round(s.hours, 3)}


def onnx_sizes(bundle: Bundle) -> dict[str, float]:
    """Megabytes of the network's ONNX graph as served, fp32 and int8."""
    model = bundle.model
    if isinstance(model, WhisperCTC):
        _, base = load_base(base_file(model.config.base))
        fp32 = ctc_network(base, {k: v.numpy() for k, v in model.trained_state().items()}, model.config)
    else:
        fp32 = export_onnx(model)
    return {"fp32_onnx": round(len(fp32) / 1e6, 3), "int8_onnx": round(len(quantize_onnx_int8(fp32)) / 1e6, 3)}


def markdown_table(results: dict[str, Any]) -> str:
    """WER/CER (percent) per set and runtime as a markdown table."""
    runtimes = list(results["runtimes"])
    header = "| test set | utterances | " + " | ".join(f"WER {r} | CER {r}" for r in runtimes) + " |"
    lines = [header, "|" + "---|" * (2 + 2 * len(runtimes))]
    for name in results["runtimes"][runtimes[0]]:
        row = results["runtimes"][runtimes[0]][name]
        cells = []
        for r in runtimes:
            entry = results["runtimes"][r].get(name, {})
            cells += [f"{100 * entry.get('wer', float('nan')):.1f}", f"{100 * entry.get('cer', float('nan')):.1f}"]
        lines.append(f"| {name} | {row['utterances']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run(argv: list[str] | None = None) -> dict[str, Any]:
    """Run ``asr-eval`` with ``argv``; return the results."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    bundle = load_bundle(args.model) if args.model else checkpoint_bundle(args.checkpoint)
    sets = build_sets(args)
    results: dict[str, Any] = {"model": str(args.model or args.checkpoint), "runtimes": {}, "sizes_mb": {}}
    fp32 = build_recognizer(bundle, args.runtime, "cpu", "fp32", args.threads)
    results["runtimes"]["fp32"] = score_runtime(fp32, sets, args.chunk_seconds)
    if args.model:
        results["sizes_mb"]["fp32_safetensors"] = round((args.model / WEIGHTS_FILE).stat().st_size / 1e6, 3)
    if args.int8:
        results["sizes_mb"].update(onnx_sizes(bundle))
        int8 = build_recognizer(bundle, "onnx", "cpu", "int8", args.threads)
        results["runtimes"]["int8"] = score_runtime(int8, sets, args.chunk_seconds)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    table = markdown_table(results)
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(table)
    print(table)
    return results


def main() -> None:
    """Console entry point of ``asr-eval``."""
    run()


if __name__ == "__main__":
    main()
