"""Sentences spoken in the two voices only the synthetic test set speaks (``make held-out-voices``).

espeak-ng's West Midlands accent (with its variant voices) and flite's ``rms`` are in no training
set; the shipped model mishears them most (``docs/benchmarks.md``). This writes a set in them, half
each, from a sentence file, for the fine-tuning example of ``docs/finetune.md``: a speaker the
model never heard, as a user's own recordings would be. Take training sentences from
``data/text/train.txt`` and dev sentences from ``data/text/dev.txt``: never the test sentences.

    python -m train.data.held_out_voices --sentences data/text/train.txt --count 800 \\
        --out data/synth/held_out_train --manifest data/manifests/held_out_train.jsonl
"""

from __future__ import annotations

import argparse
import logging
import random
from pathlib import Path

from train.data.synth import plan_jobs, synthesize
from train.data.voices import held_out_voice


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sentences", type=Path, required=True, help="one sentence a line")
    parser.add_argument("--count", type=int, required=True, help="how many of them, drawn by --seed")
    parser.add_argument("--out", type=Path, required=True, help="folder of the audio")
    parser.add_argument("--manifest", type=Path, required=True)
    parser.add_argument("--prefix", default="held-out")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=2)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    sentences = [s for s in args.sentences.read_text().splitlines() if s.strip()]
    if args.count > len(sentences):
        raise SystemExit(f"{args.sentences} has {len(sentences)} sentences, not {args.count}")
    chosen = random.Random(args.seed).sample(sentences, args.count)
    jobs = plan_jobs(args.prefix, chosen, held_out_voice, args.seed)
    synthesize(jobs, args.out, args.manifest, args.workers)


if __name__ == "__main__":
    main()
