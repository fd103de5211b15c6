"""Build the beam decoder's word language model and lexicon (``make lm``).

The text is the data recipe's English text (train/data: WordNet, GCIDE and fortune sentences,
generated sentences, speechocean762 train/ transcripts) minus every held-out sentence: the
synthetic dev and test sentences, the speechocean762 dev speakers' transcripts (the decoder is
tuned on the dev sets), all speechocean762 test/ transcripts and the evaluation manifests of
``--exclude-manifest`` (cv100). KenLM's ``lmplz``
estimates a pruned n-gram model from it. With ``--base-lm pocketsphinx`` that model is
mixed with a general English trigram model, CMU Sphinx's US English LM from the ``pocketsphinx``
package (``train/lm/sphinx.py`` reads it; words outside the model's characters dropped): the mixture
weight is the one of ``--base-weights`` with the lowest perplexity on the dev sets' sentences
(``--dev-manifest``; never LM text), and the mixture is pruned to ``--max-ngrams`` n-grams
(``train/lm/backoff.py``). ``build_binary`` packs the result; the lexicon lists every word of the
system word list, of the LM text and of the base LM that the model's characters spell.

Writes into ``--out`` (default models/en-whisper-tiny/lm)::

    lm.bin        KenLM binary (trie, quantised), loaded by the decoder
    lexicon.txt   the words the decoder may write, one a line
    card.json     what the LM was built from (sizes, order, pruning, excluded sentences)
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import subprocess
from collections import Counter
from pathlib import Path

from app.asr.configs import ENGLISH_CHARS
from app.asr.text import normalize_text, spoken_form
from train.data.corpus import load_word_list, real_sentences
from train.data.generate import generated_sentences
from train.data.prepare import parse_args as recipe_args
from train.data.prepare import split_sentences
from train.data.speechocean import _read_list
from train.lm.backoff import BackoffLM, best_weight, interpolate, prune, read_arpa, write_arpa
from train.lm.sphinx import packaged_lm, provenance, read_sphinx_trie

logger = logging.getLogger("build_lm")

LETTERS = set(ENGLISH_CHARS) - {"<blank>", " "}  # what a lexicon word may be spelled with


def kaldi_texts(path: Path) -> list[str]:
    """Normalised transcripts of a Kaldi ``text`` file."""
    return [normalize_text(t) for t in _read_list(path).values() if normalize_text(t)]


def recipe_pools(speechocean: Path, train_utts: int, seed: int) -> dict[str, list[str]]:
    """The data recipe's sentence pools, as ``train.data.prepare`` builds them."""
    pools = real_sentences(load_word_list())
    pools["generated"] = generated_sentences(max(train_utts, 2000), seed)
    pools["speechocean"] = sorted(set(kaldi_texts(speechocean / "train" / "text")))
    return pools


def held_out(pools: dict[str, list[str]], data_dir: Path, speechocean: Path, train_utts: int, seed: int) -> set[str]:
    """Sentences the LM must never see: synthetic dev/test and speechocean762 test/.

    The synthetic splits are recomputed exactly as the data recipe draws them (same seed and
    sizes) and united with ``data_dir/text/{dev,test}.txt`` when the recipe has written them.
    """
    args = recipe_args(["--train-utts", str(train_utts), "--seed", str(seed)])
    splits = split_sentences(pools, args, random.Random(seed))
    banned = set(splits["dev"]) | set(splits["test"])
    for name in ("dev", "test"):
        path = data_dir / "text" / f"{name}.txt"
        if path.is_file():
            banned |= {normalize_text(s) for s in path.read_text().splitlines() if s.strip()}
    banned |= set(kaldi_texts(speechocean / "test" / "text"))
    return banned | speechocean_dev(speechocean, data_dir, seed)


def speechocean_dev(speechocean: Path, data_dir: Path, seed: int, dev_speakers: int = 6) -> set[str]:
    """Transcripts of the speechocean762 train/ speakers the data recipe holds out for dev (kept
    out of the LM so that tuning on dev is honest): from its manifest, or drawn as the recipe draws them."""
    manifest = data_dir / "manifests" / "so762_dev.jsonl"
    if manifest.is_file():
        return {json.loads(line)["text"] for line in manifest.read_text().splitlines() if line.strip()}
    texts = _read_list(speechocean / "train" / "text")
    speaker_of = _read_list(speechocean / "train" / "utt2spk")
    sources = {utt: f"speechocean762:{speaker_of.get(utt, 'unknown')}" for utt in texts}
    held = set(random.Random(seed).sample(sorted(set(sources.values())), dev_speakers))
    return {normalize_text(texts[utt]) for utt, source in sources.items() if source in held}


def lm_text(pools: dict[str, list[str]], banned: set[str], repeat: dict[str, int] | None = None) -> list[str]:
    """Every pooled sentence that is not held out, once, or ``repeat[pool]`` times for pools to
    weigh more (in-domain text such as the speechocean762 transcripts)."""
    seen: set[str] = set()
    out = []
    for name, pool in pools.items():
        for sentence in pool:
            if sentence and sentence not in banned and sentence not in seen:
                seen.add(sentence)
                out += [sentence] * (repeat or {}).get(name, 1)
    return out


def write_lexicon(path: Path, words: set[str]) -> int:
    """One word a line, every word spelled only with the model's characters (the decoder spells
    each with the model's own tokens, so the file holds no spellings)."""
    kept = sorted(w for w in words if w and set(w) <= LETTERS)
    path.write_text("".join(f"{w}\n" for w in kept))
    return len(kept)


def run(cmd: list[str], **kwargs: object) -> None:
    logger.info("running %s", " ".join(cmd))
    subprocess.run(cmd, check=True, **kwargs)  # type: ignore[call-overload]


def estimate(kenlm_bin: Path, text: Path, work: Path, order: int, prune_counts: list[int]) -> Path:
    """lmplz (pruned, Kneser-Ney) to an ARPA file in ``work``."""
    arpa = work / "lm.arpa"
    with text.open("rb") as stdin, arpa.open("wb") as stdout:
        cmd = [str(kenlm_bin / "lmplz"), "-o", str(order), "-S", "25%", "-T", str(work), "--discount_fallback"]
        run([*cmd, "--prune", *map(str, prune_counts)], stdin=stdin, stdout=stdout)
    return arpa


def pack(kenlm_bin: Path, arpa: Path, out: Path, compress: bool = False) -> None:
    """build_binary: a trie with 8-bit probabilities and backoffs (``compress``: and pointers
    compressed, about 20 % smaller for the mixed model)."""
    pointers = ["-a", "22"] if compress else []
    run([str(kenlm_bin / "build_binary"), *pointers, "-q", "8", "-b", "8", "trie", str(arpa), str(out)])


def base_model(name: str) -> tuple[BackoffLM, dict[str, str]]:
    """The general English LM ``name`` restricted to words spelled with the model's characters."""
    if name != "pocketsphinx":
        raise SystemExit(f"unknown base LM {name!r}")
    path = packaged_lm()
    base = read_sphinx_trie(path)
    keep = {w for w in base.vocabulary if set(w) <= LETTERS}
    return base.restrict(keep).renormalise(), provenance(path)


def dev_sentences(manifests: list[Path]) -> dict[str, list[str]]:
    """Each dev manifest's normalised sentences, by file stem (absent files skipped)."""
    out = {}
    for path in manifests:
        if path.is_file():
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            out[path.stem] = [normalize_text(row["text"]) for row in rows]
    return out


def mixed_arpa(
    args: argparse.Namespace, arpa: Path, dev: dict[str, list[str]]
) -> tuple[Path, set[str], dict[str, object]]:
    """The lmplz model mixed with the base LM and pruned: its ARPA, the base's words, card entries."""
    ours = read_arpa(arpa)
    base, origin = base_model(args.base_lm)
    weight, perplexities = best_weight(ours, base, args.base_weights, dev)
    logger.info("mixture weight of the recipe's LM: %s (dev perplexities %s)", weight, perplexities)
    mixed = prune(interpolate(ours, base, weight), args.max_ngrams)
    out = args.work / "mixed.arpa"
    write_arpa(mixed, out)
    card = {
        "base": origin,
        "base_words": len(base.prob[1]),
        "recipe_weight": weight,
        "dev_perplexity": perplexities,
        "max_ngrams": args.max_ngrams,
        "ngrams": {str(n): len(table) for n, table in mixed.prob.items()},
    }
    return out, {w for (w,) in base.prob[1] if not w.startswith("<")}, card


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("models/en-whisper-tiny/lm"))
    parser.add_argument("--work", type=Path, default=Path("build/lm"), help="scratch folder (text, ARPA)")
    parser.add_argument("--kenlm", type=Path, default=Path("build/kenlm/bin"), help="folder of lmplz, build_binary")
    parser.add_argument("--speechocean", type=Path, default=Path("../shared/data/speechocean762"))
    parser.add_argument("--data", type=Path, default=Path("data"), help="the data recipe's output folder")
    parser.add_argument("--train-utts", type=int, default=16000, help="the data recipe's --train-utts")
    parser.add_argument("--seed", type=int, default=1234, help="the data recipe's --seed")
    parser.add_argument(
        "--exclude-manifest",
        type=Path,
        nargs="*",
        default=[Path("../shared/data/cv100/manifest.jsonl")],
        help="evaluation sets whose sentences the LM must never see (JSONL with a text field; absent files skipped)",
    )
    parser.add_argument("--order", type=int, default=4)
    parser.add_argument("--prune", type=int, nargs="+", default=[0, 0, 1, 1], help="lmplz --prune thresholds")
    parser.add_argument(
        "--repeat",
        nargs="*",
        default=[],
        metavar="POOL=N",
        help="count a pool's sentences N times (e.g. speechocean=5)",
    )
    parser.add_argument(
        "--base-lm",
        choices=["pocketsphinx", "none"],
        default="none",
        help="general English LM to mix in (none, the shipped recipe: the recipe's text alone)",
    )
    parser.add_argument(
        "--base-weights",
        type=float,
        nargs="+",
        default=[0.3, 0.4, 0.5, 0.6, 0.7],
        help="weights of the recipe's LM in the mixture to choose from",
    )
    parser.add_argument(
        "--dev-manifest",
        type=Path,
        nargs="*",
        default=[Path(f"data/manifests/{name}.jsonl") for name in ("synth_dev", "so762_dev", "piper_dev")],
        help="dev sets whose sentences choose the mixture weight (their sentences are never LM text)",
    )
    parser.add_argument("--max-ngrams", type=int, default=1_600_000, help="prune the mixture to this many n-grams")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    args.out.mkdir(parents=True, exist_ok=True)
    pools = recipe_pools(args.speechocean, args.train_utts, args.seed)
    banned = held_out(pools, args.data, args.speechocean, args.train_utts, args.seed)
    for manifest in args.exclude_manifest:
        if manifest.is_file():
            rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
            banned |= {form(row["text"]) for row in rows for form in (normalize_text, spoken_form)}
    dev = dev_sentences(args.dev_manifest)
    for sentences in dev.values():
        banned |= set(sentences)
    repeat = {name: int(n) for name, _, n in (item.partition("=") for item in args.repeat)}
    sentences = lm_text(pools, banned, repeat)
    if banned & set(sentences):
        raise SystemExit("a held-out sentence leaked into the LM text")
    text = args.work / "text.txt"
    text.write_text("\n".join(sentences) + "\n")
    counts = Counter(w for s in sentences for w in s.split())
    logger.info("LM text: %d sentences, %d words, %d distinct", len(sentences), sum(counts.values()), len(counts))
    arpa = estimate(args.kenlm, text, args.work, args.order, args.prune)
    base_words: set[str] = set()
    mixture: dict[str, object] = {}
    if args.base_lm != "none":
        arpa, base_words, mixture = mixed_arpa(args, arpa, dev)
    pack(args.kenlm, arpa, args.out / "lm.bin", compress=bool(mixture))
    lexicon_size = write_lexicon(args.out / "lexicon.txt", set(counts) | load_word_list() | base_words)
    card = {
        "order": args.order,
        "prune": args.prune,
        "repeat": repeat,
        "sentences": len(sentences),
        "tokens": sum(counts.values()),
        "vocabulary": len(counts),
        "lexicon_words": lexicon_size,
        "held_out_sentences_excluded": len(banned),
        "sources": {name: len(pool) for name, pool in pools.items()},
        "bytes": (args.out / "lm.bin").stat().st_size,
        **mixture,
    }
    (args.out / "card.json").write_text(json.dumps(card, indent=2) + "\n")
    logger.info("wrote %s: %s", args.out, json.dumps(card))


if __name__ == "__main__":
    main()
