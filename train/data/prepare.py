"""The data recipe in one command (``asr-data``): text, synthetic speech and speechocean762 manifests.

Everything is written under ``--out`` (default ``data/``) and is reproducible from ``--seed``::

    data/text/{train,dev,test}.txt           sentences per synthetic split
    data/synth/{train,dev,test}/<engine>/     16 kHz FLAC
    data/manifests/synth_{train,dev,test}.jsonl
    data/manifests/so762_{train,dev,test}.jsonl   (audio read in place from --speechocean)
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import time
from pathlib import Path

from train.data.audio_io import write_manifest
from train.data.corpus import load_word_list, real_sentences
from train.data.generate import generated_sentences
from train.data.speechocean import speechocean_manifests
from train.data.synth import plan_jobs, synthesize
from train.data.voices import sample_test_voice, sample_train_voice

logger = logging.getLogger(__name__)

TRAIN_MIX = {"fortunes": 0.2, "wordnet": 0.3, "gcide": 0.2, "generated": 0.15, "speechocean": 0.15}
"""Share of each text source in the synthetic training sentences."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("data"), help="output folder")
    parser.add_argument("--speechocean", type=Path, default=None, help="speechocean762 folder (train/, test/)")
    parser.add_argument("--train-utts", type=int, default=12000, help="synthetic training utterances")
    parser.add_argument("--dev-utts", type=int, default=300, help="synthetic dev utterances")
    parser.add_argument("--test-utts", type=int, default=360, help="synthetic held-out test utterances")
    parser.add_argument("--dev-speakers", type=int, default=6, help="speechocean762 train speakers held out for dev")
    parser.add_argument("--workers", type=int, default=2, help="synthesis processes")
    parser.add_argument("--seed", type=int, default=1234)
    return parser.parse_args(argv)


def split_sentences(pools: dict[str, list[str]], args: argparse.Namespace, rng: random.Random) -> dict[str, list[str]]:
    """Held-out test and dev sentences, then training sentences that never repeat them."""
    held_sources = ["fortunes", "wordnet", "gcide", "generated"]
    shuffled = {name: rng.sample(pool, len(pool)) for name, pool in pools.items()}
    cursor = dict.fromkeys(shuffled, 0)
    reserved = set(pools.get("speechocean", []))

    def take(name: str, count: int, exclude: set[str]) -> list[str]:
        out: list[str] = []
        pool = shuffled[name]
        while len(out) < count and cursor[name] < len(pool):
            sentence = pool[cursor[name]]
            cursor[name] += 1
            if sentence not in exclude:
                out.append(sentence)
        return out

    test = [s for name in held_sources for s in take(name, args.test_utts // len(held_sources), reserved)]
    dev = [s for name in held_sources for s in take(name, args.dev_utts // len(held_sources), reserved | set(test))]
    banned = set(test) | set(dev)
    train: list[str] = []
    for name, share in TRAIN_MIX.items():
        if name == "speechocean" or name not in shuffled:
            continue
        train += take(name, int(args.train_utts * share), banned)
    speech = [s for s in pools.get("speechocean", []) if s not in banned]
    while speech and len(train) < args.train_utts:
        train += speech[: args.train_utts - len(train)]
    rng.shuffle(train)
    return {"train": train, "dev": dev, "test": test}


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``asr-data``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    started = time.time()
    manifests = args.out / "manifests"
    pools = real_sentences(load_word_list())
    pools["generated"] = generated_sentences(max(args.train_utts, 2000), args.seed)
    if args.speechocean is not None:
        so762 = speechocean_manifests(args.speechocean, args.dev_speakers, args.seed)
        for split, rows in so762.items():
            write_manifest(manifests / f"so762_{split}.jsonl", rows)
        pools["speechocean"] = sorted({r["text"] for r in so762["train"]})
    splits = split_sentences(pools, args, random.Random(args.seed))
    summary: dict[str, object] = {"seed": args.seed}
    for offset, (split, sentences) in enumerate(splits.items()):
        (args.out / "text").mkdir(parents=True, exist_ok=True)
        (args.out / "text" / f"{split}.txt").write_text("\n".join(sentences) + "\n")
        picker = sample_test_voice if split == "test" else sample_train_voice
        jobs = plan_jobs(f"synth-{split}", sentences, picker, args.seed + offset)
        rows = synthesize(jobs, args.out / "synth" / split, manifests / f"synth_{split}.jsonl", args.workers)
        hours = round(sum(r["duration"] for r in rows) / 3600, 3)
        summary[f"synth_{split}"] = {"utterances": len(rows), "hours": hours}
    summary["minutes"] = round((time.time() - started) / 60, 2)
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    logger.info("data ready in %.1f minutes: %s", summary["minutes"], json.dumps(summary))


if __name__ == "__main__":
    main()
