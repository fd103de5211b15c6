"""What a last choice between the second pass's text and the CTC beam search's best texts would
gain, and cost (measured here; not what the server does).

The joint search follows the decoder's likeliest tokens, so a text the decoder finds unlikely at
some step never enters it, however well the CTC head and the n-gram LM support it. This measures
the alternative: score the second pass's text and the beam search's ``k`` best texts (the LM's
tuned defaults, written as Whisper writes: ``train.decoder_adapter.whisper_style``) each as a whole,

    (1 - w) * log p_decoder + w * log p_CTC + lm_weight * log10 p_LM + word_score * words
        (+ bonus for the second pass's own text)

with the decoder teacher-forced on the same encoder states, and keep the best. The weights are
chosen on the dev sets (lowest mean WER over a grid), then applied to the test sets; the oracle
(the candidate nearest the reference) bounds what any choice could do. The cost is the beam
search's and the scoring's time against the second pass's, in the same run (PyTorch, float32)::

    python -m bench.nbest_rescoring --model models/en-whisper-tiny \\
        --dev synth_dev so762_dev piper_dev --test cv100 so762_test synth_test --limit 200
"""

from __future__ import annotations

import argparse
import itertools
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import jiwer
import numpy as np
import torch

from app.asr.beam import BeamDecoder, load_lexicon_lm
from app.asr.bundle import load_bundle
from app.asr.bundle_files import LM_FOLDER
from app.asr.ctc import spell, spelling_index
from app.asr.text import spoken_form
from app.asr.torch_recognizer import TorchRecognizer, pad_batch, rows
from app.asr.whisper.ctc_prefix import CtcPrefixScorer
from app.asr.whisper.model import SecondPass
from bench.peers_accuracy import SETS, load_set
from bench.report import ROOT, fmt, machine, publish, table
from train.data.audio_io import read_audio, read_manifest
from train.decoder_adapter import whisper_style

WEIGHTS = (0.05, 0.1, 0.2, 0.3)
LM_WEIGHTS = (0.0, 0.5, 1.0, 1.5, 2.0)
WORD_SCORES = (-1.0, 0.0, 1.0)
BONUSES = (0.0, 2.0)
CANDIDATES = (1, 2, 4)


@dataclass
class Scored:
    """One candidate text of an utterance: its spoken words and the parts of its score."""

    words: list[str]
    own: bool
    decoder: float
    ctc: float
    lm: float


@dataclass
class Utterance:
    reference: str
    candidates: list[Scored]  # the second pass's text first, then the beam search's, best first
    seconds: dict[str, float] = field(default_factory=dict)


Setting = tuple[float, float, float, float, int]  # w, lm_weight, word_score, bonus, candidates


class Measure:
    """Decodes one utterance both ways and scores every candidate."""

    def __init__(self, model: Path, candidates: int) -> None:
        bundle = load_bundle(model)
        if bundle.second_pass is None:
            raise SystemExit(f"{model} has no second pass")
        lm = load_lexicon_lm(
            model / LM_FOLDER, bundle.config.tokens, bundle.config.blank_id, bundle.config.word_delimiter
        )
        if lm is None:
            raise SystemExit(f"{model} has no lm/ folder")
        self.recognizer, self.passes = TorchRecognizer(bundle), bundle.second_pass
        self.lm, self.config = lm, bundle.config
        self.beam = BeamDecoder(lm, replace(lm.defaults, alternatives=candidates), bundle.config.frame_seconds)
        self.index, self.longest = spelling_index(self.config.tokens)
        self.char_ids = {t: i for i, t in enumerate(self.config.tokens) if i != self.config.blank_id}

    @torch.inference_mode()
    def utterance(self, wave: np.ndarray, reference: str) -> Utterance:
        seconds: dict[str, float] = {}
        started = time.perf_counter()
        batch, lengths = pad_batch([wave])
        features, frames = self.recognizer.frontend(batch, lengths)
        log_probs = rows(*self.recognizer.network(features, frames))[0]
        own = self.passes.transcribe(features, frames, [log_probs])[0]
        seconds["second_pass"] = time.perf_counter() - started
        started = time.perf_counter()
        hypothesis = self.beam.decode(log_probs)
        texts = [a.text for a in hypothesis.alternatives] or [hypothesis.text]
        seconds["beam"] = time.perf_counter() - started
        started = time.perf_counter()
        scorer = CtcPrefixScorer(log_probs, self.config.blank_id, self.char_ids, self.config.word_delimiter)
        states, _ = self.passes.encode(features, frames)
        cross = self.passes.decoder.cross_keys(states)
        candidates = [self.scored(own, own, True, scorer, cross)]
        for text in texts:
            words = self.words(text)
            written = whisper_style(" ".join(words)) if words else ""
            candidates.append(self.scored(text, written, False, scorer, cross))
        seconds["scoring"] = time.perf_counter() - started
        return Utterance(spoken_form(reference), candidates, seconds)

    def words(self, text: str) -> list[str]:
        return [w for w in spoken_form(text).split() if spell(w, self.index, self.longest)]

    def scored(self, text: str, written: str, own: bool, scorer: CtcPrefixScorer, cross: Any) -> Scored:
        words = self.words(text)
        spelled = scorer.extend(scorer.empty(), self.config.word_delimiter.join(words))
        decoder = teacher_forced(self.passes, cross, self.passes.tokenizer.encode(" " + written) if written else [])
        return Scored(words, own, decoder, spelled.end_score, self.lm.sentence_score(words))


@torch.inference_mode()
def teacher_forced(passes: SecondPass, cross: Any, tokens: list[int]) -> float:
    """The decoder's log-probability of ``tokens`` and end-of-text (suppressed tokens masked, as
    the search masks them)."""
    rules = passes.rules
    sequence = torch.tensor([[*rules.prompt, *tokens]])
    logits, _ = passes.decoder(sequence, None, cross, None)
    logits = logits[0, len(rules.prompt) - 1 :]
    logits[:, list(rules.suppress)] = -torch.inf
    logits[0, list(rules.suppress_first)] = -torch.inf
    targets = torch.tensor([*tokens, rules.end_of_text])
    return float(torch.log_softmax(logits, -1)[torch.arange(len(targets)), targets].sum())


def choose(utterance: Utterance, setting: Setting) -> list[str]:
    w, lm_weight, word_score, bonus, count = setting

    def total(c: Scored) -> float:
        score = (1 - w) * c.decoder + w * c.ctc + lm_weight * c.lm + word_score * len(c.words)
        return score + (bonus if c.own else 0.0)

    return max(utterance.candidates[: 1 + count], key=total).words


def wer(utterances: list[Utterance], pick: Any) -> float:
    return 100 * jiwer.wer([u.reference for u in utterances], [" ".join(pick(u)) or "<empty>" for u in utterances])


def oracle(utterances: list[Utterance]) -> float:
    errors = words = 0
    for u in utterances:
        outs = [jiwer.process_words(u.reference, " ".join(c.words) or "<empty>") for c in u.candidates]
        errors += min(o.substitutions + o.deletions + o.insertions for o in outs)
        words += len(u.reference.split())
    return 100 * errors / words


def load(name: str, data: Path, limit: int) -> list[tuple[str, str]]:
    """(audio, reference) of a test set (``bench.peers_accuracy``'s) or a manifest under data/manifests/."""
    if name in SETS:
        return [(u.audio, u.text) for u in load_set(name, data, limit)]
    return [(r["audio"], r["text"]) for r in read_manifest(ROOT / "data" / "manifests" / f"{name}.jsonl")[:limit]]


def render(result: dict[str, Any], command: str, json_path: Path, host: dict[str, Any]) -> str:
    w, lm_weight, word_score, bonus, count = result["setting"]
    lines = [
        "### The second pass's text or the CTC beam search's (measured, not served)",
        "",
        f"`{command}`",
        "",
        f"Chosen on the dev sets: the beam search's {count} best, w {w:g}, lm_weight {lm_weight:g}, "
        f"word_score {word_score:g}, bonus {bonus:g} for the second pass's own text.",
        "",
    ]
    body = [
        [name, str(s["utterances"]), fmt(s["second_pass"]), fmt(s["rescored"]), fmt(s["oracle"]), s["kind"]]
        for name, s in result["sets"].items()
    ]
    lines.append(table(["set", "utterances", "second pass", "rescored", "oracle", "kind"], body))
    cost = result["seconds"]
    lines += [
        "",
        f"Time of the beam search and of the scoring (the pretrained encoder again, then each candidate "
        f"on its own) against the second pass's: "
        f"{cost['beam'] / cost['second_pass']:.2f}x and {cost['scoring'] / cost['second_pass']:.2f}x "
        f"({host['cores']} cores, load {host['load_average'][0]}). JSON: {json_path}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "en-whisper-tiny")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--dev", nargs="+", default=["synth_dev", "so762_dev", "piper_dev"])
    parser.add_argument("--test", nargs="*", default=["cv100", "so762_test", "synth_test"])
    parser.add_argument("--limit", type=int, default=200, help="first N utterances of each set")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--docs", action="store_true", help="write the section of docs/benchmarks.md")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    measure = Measure(args.model, max(CANDIDATES))
    decoded: dict[str, list[Utterance]] = {}
    for name in [*args.dev, *args.test]:
        pairs = load(name, args.data, args.limit)
        decoded[name] = [measure.utterance(read_audio(audio), text) for audio, text in pairs]
        print(f"{name}: {len(decoded[name])} utterances", flush=True)
    grid = list(itertools.product(WEIGHTS, LM_WEIGHTS, WORD_SCORES, BONUSES, CANDIDATES))
    dev_mean = [float(np.mean([wer(decoded[name], lambda u, s=s: choose(u, s)) for name in args.dev])) for s in grid]
    setting = grid[int(np.argmin(dev_mean))]
    sets = {
        name: {
            "kind": "dev" if name in args.dev else "test",
            "utterances": len(utterances),
            "second_pass": wer(utterances, lambda u: u.candidates[0].words),
            "rescored": wer(utterances, lambda u: choose(u, setting)),
            "oracle": oracle(utterances),
        }
        for name, utterances in decoded.items()
    }
    everything = [u for utterances in decoded.values() for u in utterances]
    seconds = {part: float(sum(u.seconds[part] for u in everything)) for part in ("second_pass", "beam", "scoring")}
    result = {"model": str(args.model), "machine": machine(), "setting": setting, "sets": sets, "seconds": seconds}
    publish("bench.nbest_rescoring", "nbest_rescoring", result, render, args.docs)
    return result


if __name__ == "__main__":
    main()
