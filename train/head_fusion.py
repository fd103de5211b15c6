"""Two CTC heads on two encoders, combined (``python -m train.head_fusion``).

The shipped head reads the tuned encoder, which knows speechocean762's non-native speakers; a head
on the untouched pretrained encoder (``train.head_shapes``) hears native speech better. Two ways to
combine them, each chosen on the dev sets and scored on the test sets:

- **frames**: both run at 50 frames a second on the same audio, so their log-probs line up frame by
  frame; the mixture is ``log_softmax(w * a + (1 - w) * b)``, decoded greedily and with the LM's
  beam search (``w`` chosen by mean greedy WER; each head alone is ``w`` 1 and 0).
- **sequences**: each head's beam search proposes its best transcripts; each candidate is scored by
  both heads (its CTC log-probability summed over all alignments, so the heads need not put their
  peaks on the same frames), the LM and its length: ``w * A + (1 - w) * B + lm_weight * LM +
  word_score * words``, the best kept (settings chosen by mean WER).

    python -m train.head_shapes train --shape lstm                   # head A: runs/head-shapes/lstm
    python -m train.head_shapes cache --bundle models/en-whisper-tiny --root data/cache/head-shapes-tuned
    python -m train.head_shapes train --init-head --steps 0 --bundle models/en-whisper-tiny \\
        --cache-root data/cache/head-shapes-tuned --out runs/head-shapes/tuned   # head B, the bundle's own
    python -m train.head_fusion runs/head-shapes/lstm runs/head-shapes/tuned/linear --out runs/head-shapes/fusion.json

(``make head-fusion`` runs the last three.)
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
import torch
import torch.nn.functional as F

from app.asr.beam import BeamDecoder, load_lexicon_lm
from app.asr.bundle_files import LM_FOLDER
from app.asr.configs import BundleConfig
from app.asr.ctc import Hypothesis, text_to_ids
from train.head_shapes import (
    HEAD_FILE,
    CTCHead,
    ShapeRun,
    decode_set,
    frozen_config,
    greedy_wer,
    new_head,
)
from train.scoring import score
from train.whisper_data import load_cached

logger = logging.getLogger(__name__)

WEIGHTS = tuple(round(0.1 * i, 1) for i in range(11))  # the share of head A
LM_WEIGHTS = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)  # of the LM's sentence score, for the sequences' choice
WORD_SCORES = (-1.0, 0.0, 1.0, 2.0, 3.0)
CANDIDATES = 8  # transcripts each head's beam search proposes

Member = tuple[ShapeRun, BundleConfig, CTCHead]  # a run's settings, its states' config, its best head
Pair = tuple[list[np.ndarray], list[np.ndarray], list[str]]  # both heads' log-probs of a set, its texts
Alone = tuple[list[Hypothesis], list[Hypothesis]]  # each head's own beam search of a set's utterances


def load_member(folder: Path) -> Member:
    """A ``train.head_shapes`` run folder's settings, its states' config and its best head."""
    if not (folder / HEAD_FILE).is_file():
        raise SystemExit(f"{folder} has no {HEAD_FILE}: a train.head_shapes run folder")
    settings = json.loads((folder / "result.json").read_text())["settings"]
    run = ShapeRun(**{f.name: settings[f.name] for f in fields(ShapeRun) if f.name in settings})
    config = frozen_config(run.depth)
    head = new_head(run, config)
    head.load_state_dict(torch.load(folder / HEAD_FILE, weights_only=True))
    return run, config, head.eval()


def log_probs(member: Member, name: str) -> tuple[list[np.ndarray], list[str]]:
    """One member's log-probs of each utterance of a cached set (of the encoder it trained on), and the set's texts."""
    run, config, head = member
    cached, _ = load_cached(name, Path(run.cache_root), config, run.bundle)
    return decode_set(head, cached), cached.texts


def mix(a: list[np.ndarray], b: list[np.ndarray], w: float) -> list[np.ndarray]:
    """Each utterance's ``log_softmax(w * a + (1 - w) * b)`` over the vocabulary of each frame."""
    out = []
    for x, y in zip(a, b, strict=True):
        if x.shape != y.shape:
            raise ValueError(f"the two heads' frames differ: {x.shape} and {y.shape}")
        out.append(torch.log_softmax(torch.from_numpy(w * x + (1.0 - w) * y), dim=-1).numpy())
    return out


def paired(a: Member, b: Member, name: str) -> Pair:
    """Both members' log-probs of a set, checked to be the same utterances in the same order."""
    lp_a, texts = log_probs(a, name)
    lp_b, texts_b = log_probs(b, name)
    if texts != texts_b:
        raise SystemExit(f"{name}: the two cache roots hold other utterances or another order")
    return lp_a, lp_b, texts


@dataclass
class Candidates:
    """One utterance's candidate transcripts and their scores, (n, 4): head A's and head B's CTC
    log-probabilities, the LM's sentence score and the number of words."""

    texts: list[str]
    scores: np.ndarray

    def best(self, w: float, lm_weight: float, word_score: float) -> str:
        return self.texts[int(np.argmax(self.scores @ np.array([w, 1.0 - w, lm_weight, word_score])))]


def sequence_log_probs(log_probs: np.ndarray, texts: list[str], config: BundleConfig) -> np.ndarray:
    """Each text's CTC log-probability under one head's (frames, vocab) log-probs: summed over all
    its alignments, so two heads that put a letter's peak on other frames still agree on it."""
    targets = [text_to_ids(t, config.tokens, config.word_delimiter) if t else [] for t in texts]
    frames = log_probs.shape[0]
    loss = F.ctc_loss(
        torch.from_numpy(log_probs).float()[:, None, :].expand(-1, len(texts), -1),
        torch.tensor([i for t in targets for i in t], dtype=torch.long),
        torch.full((len(texts),), frames, dtype=torch.long),
        torch.tensor([len(t) for t in targets], dtype=torch.long),
        blank=config.blank_id, reduction="none",
    )  # fmt: skip
    return -loss.numpy()


@dataclass
class Heads:
    """What both ways of combining the heads read: each set's log-probs of both heads and its texts,
    each head's own beam search of it (run once: the frame mixture's ends and the candidates both
    read it), the LM's beam search and the states' config."""

    sets: dict[str, Pair]
    alone: dict[str, Alone]
    beam: BeamDecoder
    config: BundleConfig

    @classmethod
    def searched(cls, sets: dict[str, Pair], beam: BeamDecoder, config: BundleConfig) -> Heads:
        alone = {n: ([beam.decode(x) for x in a], [beam.decode(x) for x in b]) for n, (a, b, _) in sets.items()}
        return cls(sets, alone, beam, config)


def propose(
    lp_a: np.ndarray, lp_b: np.ndarray, hyp_a: Hypothesis, hyp_b: Hypothesis, beam: BeamDecoder, config: BundleConfig
) -> Candidates:
    """The union of both heads' beam search candidates, each scored by both heads and the LM."""
    texts: list[str] = []
    for hyp in (hyp_a, hyp_b):
        for text in [hyp.text, *(alt.text for alt in hyp.alternatives)]:
            if text not in texts:
                texts.append(text)
    scores = np.stack(
        [
            sequence_log_probs(lp_a, texts, config),
            sequence_log_probs(lp_b, texts, config),
            np.array([beam.lm.sentence_score(t.split()) for t in texts]),
            np.array([len(t.split()) for t in texts], dtype=float),
        ],
        axis=1,
    )
    return Candidates(texts, scores)


def oracle_wer(texts: list[str], candidates: list[Candidates]) -> float:
    """The WER of the best candidate of each utterance (what no choice among them can beat)."""
    picked = []
    for reference, c in zip(texts, candidates, strict=True):
        picked.append(min(c.texts, key=lambda h: float(jiwer.wer(reference, h))))
    return round(score(texts, picked).wer, 4)


def frames(heads: Heads, dev: list[str], test: list[str]) -> dict:
    """The frame mixture: ``w`` chosen on ``dev`` by mean greedy WER, ``test`` scored at it and at both
    ends (each head alone, whose beam search ``heads.alone`` holds)."""
    sets, alone, beam, config = heads.sets, heads.alone, heads.beam, heads.config
    greedy = {}
    for w in WEIGHTS:
        greedy[w] = {n: greedy_wer(config, mix(*sets[n][:2], w), sets[n][2]) for n in dev}
        greedy[w]["mean"] = round(sum(greedy[w].values()) / len(dev), 4)
        logger.info("frames, w %.1f: dev greedy %s", w, greedy[w])
    chosen = min(WEIGHTS, key=lambda w: (greedy[w]["mean"], abs(w - 0.5)))
    tests: dict[str, dict[str, dict[str, float]]] = {}
    for name in test:
        lp_a, lp_b, texts = sets[name]
        ends = {1.0: alone[name][0], 0.0: alone[name][1]}
        for w in sorted({0.0, chosen, 1.0}):
            mixed = mix(lp_a, lp_b, w)
            hyps = ends[w] if w in ends else [beam.decode(lp) for lp in mixed]
            tests.setdefault(name, {})[str(w)] = {
                "greedy": greedy_wer(config, mixed, texts),
                "beam": wer([h.text for h in hyps], texts),
            }
            logger.info("frames, %s at w %.1f: %s", name, w, tests[name][str(w)])
    return {"weight_of_a": chosen, "dev_greedy": {str(w): v for w, v in greedy.items()}, "test": tests}


def sequences(heads: Heads, dev: list[str], test: list[str]) -> dict:
    """The candidates' choice: its settings chosen on ``dev`` by mean WER, ``test`` scored at them."""
    sets, alone, beam, config = heads.sets, heads.alone, heads.beam, heads.config
    proposed = {
        n: [propose(*x, beam, config) for x in zip(*sets[n][:2], *alone[n], strict=True)]
        for n in dict.fromkeys([*dev, *test])
    }
    settings = list(itertools.product(WEIGHTS, LM_WEIGHTS, WORD_SCORES))

    def wers(names: list[str], setting: tuple[float, float, float]) -> dict[str, float]:
        out = {n: wer([c.best(*setting) for c in proposed[n]], sets[n][2]) for n in names}
        return {**out, "mean": round(sum(out.values()) / len(names), 4)}

    chosen = min(settings, key=lambda s: (wers(dev, s)["mean"], abs(s[0] - 0.5)))
    result = {
        "setting": dict(zip(("weight_of_a", "lm_weight", "word_score"), chosen, strict=True)),
        "candidates": round(float(np.mean([len(c.texts) for n in test for c in proposed[n]])), 2),
        "dev": wers(dev, chosen),
        "test": wers(test, chosen),
        "oracle": {n: oracle_wer(sets[n][2], proposed[n]) for n in test},
        "test_by_weight": {str(w): wers(test, (w, *chosen[1:])) for w in WEIGHTS},  # the trade, for the record
    }
    logger.info("sequences: %s", result)
    return result


def wer(hypotheses: list[str], texts: list[str]) -> float:
    return round(score(texts, hypotheses).wer, 4)


def fuse(folder_a: Path, folder_b: Path, dev: list[str], test: list[str], lm_bundle: str) -> dict[str, Any]:
    """Both ways of combining heads A and B, chosen on ``dev`` and scored on ``test``."""
    a, b = load_member(folder_a), load_member(folder_b)
    config = a[1]
    if config.tokens != b[1].tokens:
        raise SystemExit("the two heads spell with other tokens")
    lm = load_lexicon_lm(Path(lm_bundle) / LM_FOLDER, config.tokens, config.blank_id, config.word_delimiter)
    if lm is None:
        raise SystemExit(f"no language model in {lm_bundle}/{LM_FOLDER}")
    beam = BeamDecoder(lm, replace(lm.defaults, alternatives=CANDIDATES), config.frame_seconds)
    sets = {name: paired(a, b, name) for name in dict.fromkeys([*dev, *test])}
    heads = Heads.searched(sets, beam, config)
    return {
        "a": str(folder_a),
        "b": str(folder_b),
        "frames": frames(heads, dev, test),
        "sequences": sequences(heads, dev, test),
    }


def run(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("a", type=Path, help="head A's run folder (result.json and head.pt)")
    parser.add_argument("b", type=Path, help="head B's run folder")
    parser.add_argument("--dev", nargs="+", default=["synth_dev", "so762_dev"])
    parser.add_argument("--test", nargs="+", default=["cv100_eval", "so762_test200"])
    parser.add_argument("--lm-bundle", default="models/en-whisper-tiny")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write the result here as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = fuse(args.a, args.b, args.dev, args.test, args.lm_bundle)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))
    for way in ("frames", "sequences"):
        print(way, json.dumps({k: v for k, v in result[way].items() if k != "dev_greedy"}))
    return result


if __name__ == "__main__":
    run()
