"""Choose the second pass's CTC weight and beam count of a Whisper bundle on dev sets.

Every setting decodes the same audio (the CTC log-probs and the decoder's cross-attention are
computed once per utterance); WER is after ``spoken_form`` on both sides. ``--write`` stores the
setting with the lowest mean WER over the sets as ``ctc_weight`` and ``ctc_beams`` in the bundle's
``config.json``. Never give it a test set.

    python -m train.tune_second_pass --model models/en-whisper-tiny \\
        --dev data/manifests/synth_dev.jsonl data/manifests/so762_dev.jsonl data/manifests/piper_dev.jsonl \\
        --weights 0 0.05 0.1 0.15 --beams 1 4 --json bench/results/second_pass_tune.json --write
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jiwer
import numpy as np

from app.asr.bundle_files import CONFIG_FILE, read_config, write_network_settings
from app.asr.configs import WhisperCTCConfig
from app.asr.slim.recognizer import SlimRecognizer
from app.asr.text import spoken_form
from app.asr.whisper.greedy import GreedyRows, token_caps
from app.asr.whisper.joint import JointDecoding
from train.data.audio_io import read_audio, read_manifest

Setting = tuple[float, int]  # CTC weight, beams; (0, 1) is Whisper's own greedy decoding


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=Path("models/en-whisper-tiny"))
    parser.add_argument("--dev", type=Path, nargs="+", required=True, help="manifests (never a test set)")
    parser.add_argument("--weights", type=float, nargs="+", default=[0.0, 0.05, 0.1, 0.15])
    parser.add_argument("--beams", type=int, nargs="+", default=[1, 4], help="hypotheses kept per step")
    parser.add_argument("--limit", type=int, default=None, help="first N utterances of each set")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None, help="write the table here too")
    parser.add_argument("--write", action="store_true", help="store the best setting in the bundle's config.json")
    return parser.parse_args(argv)


def decode_settings(recognizer: SlimRecognizer, wave: np.ndarray, settings: list[Setting]) -> list[str]:
    """The second pass's text of ``wave`` (at most 30 s) at each setting."""
    passes = recognizer.passes
    features, lengths = recognizer._features([wave])
    log_probs = recognizer._log_probs(features, lengths)
    cross = passes.cross_keys(features, lengths)
    caps = token_caps(lengths.tolist())
    joint = passes.joint or JointDecoding.of(
        recognizer.config, passes.tokenizer.token_texts(), passes.rules.end_of_text, 0.0, 1
    )
    texts = []
    for weight, beams in settings:
        if (weight, beams) == (0.0, 1):
            tokens = passes.decode(cross, GreedyRows(passes.rules, 1, caps))[0]
        else:
            search = dataclasses.replace(joint, weight=weight, beams=beams).search(log_probs, caps)
            tokens = passes.decode(cross, search)[0]
        texts.append(passes.tokenizer.decode(tokens))
    return texts


def write_setting(model: Path, setting: Setting) -> None:
    """Store ``setting`` as the bundle's ``ctc_weight`` and ``ctc_beams``."""
    if not isinstance(read_config(model).model, WhisperCTCConfig):
        raise SystemExit(f"{model} is not a Whisper bundle")
    write_network_settings(model, ctc_weight=setting[0], ctc_beams=setting[1])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    recognizer = SlimRecognizer.load(args.model, num_threads=args.threads)
    settings: list[Setting] = [(w, b) for b in args.beams for w in args.weights]
    results: dict[str, Any] = {
        "command": "python -m train.tune_second_pass " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": settings,
        "sets": {},
    }
    for manifest in args.dev:
        rows = read_manifest(manifest)[: args.limit]
        refs: list[str] = []
        hyps: list[list[str]] = [[] for _ in settings]
        started = time.perf_counter()
        for row in rows:
            texts = decode_settings(recognizer, read_audio(row["audio"]), settings)
            refs.append(spoken_form(row["text"]))
            for column, text in zip(hyps, texts, strict=True):
                column.append(spoken_form(text) or "<empty>")
        wers = [round(100 * jiwer.wer(refs, column), 2) for column in hyps]
        results["sets"][manifest.stem] = {"utterances": len(rows), "wer_percent": wers}
        print(f"{manifest.stem}: {len(rows)} utterances in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    means = [float(np.mean([s["wer_percent"][i] for s in results["sets"].values()])) for i in range(len(settings))]
    results["mean_wer_percent"] = [round(m, 2) for m in means]
    best = settings[int(np.argmin(means))]
    results["best"] = {"ctc_weight": best[0], "ctc_beams": best[1]}
    print("| CTC weight | beams | " + " | ".join(results["sets"]) + " | mean |")
    print("|---|---|" + "---|" * (len(results["sets"]) + 1))
    for i, (weight, beams) in enumerate(settings):
        cells = [f"{s['wer_percent'][i]:.2f}" for s in results["sets"].values()]
        print(f"| {weight:g} | {beams} | " + " | ".join(cells) + f" | {means[i]:.2f} |")
    print(f"best: ctc_weight {best[0]:g}, ctc_beams {best[1]}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    if args.write:
        write_setting(args.model, best)
        print(f"written to {args.model / CONFIG_FILE}", file=sys.stderr)


if __name__ == "__main__":
    main()
