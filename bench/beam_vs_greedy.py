"""Greedy decoding versus beam search with the language model: accuracy, tuning and served speed.

    # WER of both decoders (and of beam search as narrow as a stream partial's) on the held-out
    # synthetic set, speechocean762 test/ and cv100
    python bench/beam_vs_greedy.py wer --model models/en-small --synth data/manifests/synth_test.jsonl \\
        --speechocean ../shared/data/speechocean762 --cv100 ../shared/data/cv100
    # grid-search lm_weight and word_score on the dev sets; writes <lm>/decoder.json
    python bench/beam_vs_greedy.py tune --model models/en-small \\
        --dev data/manifests/synth_dev.jsonl data/manifests/so762_dev.jsonl
    # served throughput at concurrency 16, greedy then beam, against a server this script starts
    python bench/beam_vs_greedy.py throughput --model models/en-small --concurrency 16
    # what hotwords cost: decoding time without, with in-lexicon and with out-of-lexicon hotwords
    python bench/beam_vs_greedy.py hotwords --model models/en-small --utterances 200
    # what they do: test utterances with a name the lexicon lacks, without and with it as a hotword
    python bench/beam_vs_greedy.py hotword-demo --model models/en-small --word jayme

Results are printed and, with ``--json``, written to a file (bench/results/ is git-ignored).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import jiwer
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.asr.beam import BeamDecoder, BeamOptions, LexiconLM, load_lexicon_lm, parse_hotwords  # noqa: E402
from app.asr.bundle import Bundle, load_bundle  # noqa: E402
from app.asr.bundle_files import LM_FOLDER  # noqa: E402
from app.asr.ctc import GreedyDecoder  # noqa: E402
from app.asr.text import spoken_form  # noqa: E402
from app.asr.torch_recognizer import TorchRecognizer  # noqa: E402
from app.config import Settings  # noqa: E402
from train.data.audio_io import read_audio, read_manifest  # noqa: E402
from train.data.speechocean import split_rows  # noqa: E402


@functools.cache
def bundle_of(model: Path) -> Bundle:
    """A bundle folder, or a training checkpoint (.pt) as a bundle."""
    if model.suffix == ".pt":
        from train.export import checkpoint_bundle

        return checkpoint_bundle(model)
    return load_bundle(model)


def log_probs_of(model: Path, rows: list[dict[str, Any]], batch_seconds: float = 120.0) -> list[np.ndarray]:
    """(frames, vocab) log-probs of every row's audio, batched by length (order kept)."""
    recognizer = TorchRecognizer(bundle_of(model), device="cpu", precision="fp32")
    waves = [read_audio(row["audio"]) for row in rows]
    order = sorted(range(len(waves)), key=lambda i: waves[i].size)
    out: list[np.ndarray] = [np.empty(0)] * len(waves)
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and waves[order[end]].size * (end - start + 1) <= batch_seconds * 16000:
            end += 1
        batch = order[start:end]
        for i, lp in zip(batch, recognizer.infer([waves[i] for i in batch]), strict=True):
            out[i] = lp
        start = end
    return out


def wer_of(decoder: Any, log_probs: list[np.ndarray], refs: list[str]) -> tuple[float, float]:
    """Corpus WER of ``decoder`` and its decoding seconds."""
    started = time.perf_counter()
    hyps = [decoder.decode(lp).text for lp in log_probs]
    return float(jiwer.wer(refs, hyps)), time.perf_counter() - started


def load_lm(model: Path, lm_dir: Path | None) -> tuple[LexiconLM, float]:
    config = bundle_of(model).config
    folder = lm_dir or (model / LM_FOLDER if model.is_dir() else ROOT / "models" / "en-small" / LM_FOLDER)
    lm = load_lexicon_lm(folder, config.tokens, config.blank_id, config.word_delimiter)
    if lm is None:
        raise SystemExit(f"no language model in {folder}")
    return lm, config.frame_seconds


def test_sets(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    sets = {}
    if args.synth and Path(args.synth).is_file():
        sets["synth_test"] = read_manifest(args.synth)
    if args.speechocean and (Path(args.speechocean) / "test" / "text").is_file():
        sets["so762_test"] = split_rows(Path(args.speechocean), "test")
    if args.cv100 and (Path(args.cv100) / "manifest.jsonl").is_file():  # written as people write: spoken form
        rows = read_manifest(Path(args.cv100) / "manifest.jsonl")
        sets["cv100"] = [{**row, "text": spoken_form(row["text"])} for row in rows]
    if args.limit:
        sets = {name: rows[: args.limit] for name, rows in sets.items()}
    return sets


def cmd_wer(args: argparse.Namespace) -> dict[str, Any]:
    lm, frame_s = load_lm(args.model, args.lm)
    config = bundle_of(args.model).config
    greedy = GreedyDecoder(config.tokens, config.blank_id, frame_s, config.word_delimiter)
    beam = BeamDecoder(lm, lm.defaults, frame_s)
    partial_size = min(lm.defaults.beam_size, args.partial_beam_size)
    partial = BeamDecoder(lm, replace(lm.defaults, beam_size=partial_size), frame_s)
    results: dict[str, Any] = {
        "beam_options": lm.defaults.__dict__ | {"hotwords": []},
        "partial_beam_size": partial_size,
    }
    for name, rows in test_sets(args).items():
        log_probs = log_probs_of(args.model, rows)
        refs = [row["text"] for row in rows]
        greedy_wer, greedy_s = wer_of(greedy, log_probs, refs)
        beam_wer, beam_s = wer_of(beam, log_probs, refs)
        partial_wer, partial_s = wer_of(partial, log_probs, refs)
        results[name] = {
            "utterances": len(rows),
            "greedy_wer": round(greedy_wer, 4),
            "beam_wer": round(beam_wer, 4),
            "partial_beam_wer": round(partial_wer, 4),
            "relative_reduction": round(1 - beam_wer / greedy_wer, 4) if greedy_wer else None,
            "greedy_decode_s": round(greedy_s, 2),
            "beam_decode_s": round(beam_s, 2),
            "partial_beam_decode_s": round(partial_s, 2),
        }
        print(name, json.dumps(results[name]), flush=True)
    return results


def dev_wer(lm: LexiconLM, options: BeamOptions, frame_s: float, cached: dict[str, Any]) -> dict[str, float]:
    """WER per dev set and their mean, plus the decoding seconds, for one setting."""
    decoder = BeamDecoder(lm, options, frame_s)
    scored = {name: wer_of(decoder, lps, refs) for name, (lps, refs) in cached.items()}
    wers = {name: round(wer, 4) for name, (wer, _) in scored.items()}
    mean = round(float(np.mean(list(wers.values()))), 4)
    return {**wers, "mean": mean, "decode_s": round(sum(s for _, s in scored.values()), 2)}


SEARCH_TOLERANCE = 0.002
"""How much mean dev WER a narrower search may cost (0.2 points) for its speed."""


def cmd_tune(args: argparse.Namespace) -> dict[str, Any]:
    """Grid search of lm_weight x word_score on the dev sets at the widest search, then, one after
    another, the narrowest beam size, tokens tried per frame (``beam_size_token``) and score
    threshold (``beam_threshold``) whose mean dev WER is within 0.2 points of the widest's; the
    result goes to <lm>/decoder.json."""
    lm, frame_s = load_lm(args.model, args.lm)
    dev = {Path(p).stem: read_manifest(p) for p in args.dev}
    cached = {name: (log_probs_of(args.model, rows), [r["text"] for r in rows]) for name, rows in dev.items()}
    greedy = GreedyDecoder(lm.tokens, lm.blank_id, frame_s)
    print("greedy", json.dumps({name: round(wer_of(greedy, lps, refs)[0], 4) for name, (lps, refs) in cached.items()}))
    widest = replace(
        lm.defaults,
        beam_size=max(args.beam_sizes),
        beam_size_token=max(args.beam_tokens),
        beam_threshold=max(args.beam_thresholds),
    )
    grid = []
    for lm_weight in args.lm_weights:
        for word_score in args.word_scores:
            options = replace(widest, lm_weight=lm_weight, word_score=word_score)
            grid.append({"lm_weight": lm_weight, "word_score": word_score, **dev_wer(lm, options, frame_s, cached)})
            print(json.dumps(grid[-1]), flush=True)
    best = min(grid, key=lambda g: g["mean"])
    options = replace(widest, lm_weight=best["lm_weight"], word_score=best["word_score"])
    narrowing: dict[str, list[dict[str, Any]]] = {}
    for knob, values in (
        ("beam_size", args.beam_sizes),
        ("beam_size_token", args.beam_tokens),
        ("beam_threshold", args.beam_thresholds),
    ):
        tried = narrowing[knob] = []
        for value in sorted(values):
            tried.append({knob: value, **dev_wer(lm, replace(options, **{knob: value}), frame_s, cached)})
            print(json.dumps(tried[-1]), flush=True)
        chosen = next(t for t in tried if t["mean"] <= tried[-1]["mean"] + SEARCH_TOLERANCE)
        options = replace(options, **{knob: chosen[knob]})
    defaults = {
        "beam_size": options.beam_size,
        "beam_size_token": options.beam_size_token,
        "beam_threshold": options.beam_threshold,
        "lm_weight": options.lm_weight,
        "word_score": options.word_score,
        "tuned_on": sorted(dev),
        "dev_wer": {k: v for k, v in chosen.items() if k in dev or k == "mean"},
    }
    (lm.folder / "decoder.json").write_text(json.dumps(defaults, indent=2) + "\n")
    print("chosen", json.dumps(defaults))
    return {"grid": grid, **narrowing, "chosen": defaults}


def cmd_hotwords(args: argparse.Namespace) -> dict[str, Any]:
    """Decoding time without hotwords, with in-lexicon ones, and with ones the lexicon lacks."""
    lm, frame_s = load_lm(args.model, args.lm)
    rows = next(iter(test_sets(args).values()))[: args.utterances]
    log_probs = log_probs_of(args.model, rows)
    in_lexicon = parse_hotwords(["piano", "elephant", "garden", "yellow", "river:10"], 8.0)
    missing = parse_hotwords(["kubelet", "grafana", "prometheus", "zeroconf", "tensorrt"], 8.0)
    results: dict[str, Any] = {"utterances": len(rows), "audio_s": round(sum(r["duration"] for r in rows), 1)}
    for name, hotwords in (("none", ()), ("in_lexicon", in_lexicon), ("missing_from_lexicon", missing)):
        decoder = BeamDecoder(lm, replace(lm.defaults, hotwords=hotwords), frame_s)
        started = time.perf_counter()
        decoder.decode(log_probs[0])
        first = time.perf_counter() - started
        started = time.perf_counter()
        for lp in log_probs:
            decoder.decode(lp)
        results[name] = {"first_request_s": round(first, 3), "decode_s": round(time.perf_counter() - started, 3)}
        print(name, json.dumps(results[name]), flush=True)
    return results


def cmd_hotword_demo(args: argparse.Namespace) -> dict[str, Any]:
    """Utterances of the test sets that contain ``--word``: greedy, beam, and beam with it as a hotword."""
    lm, frame_s = load_lm(args.model, args.lm)
    word = args.word
    rows = [r for rows in test_sets(args).values() for r in rows if word in r["text"].split()]
    log_probs = log_probs_of(args.model, rows)
    greedy = GreedyDecoder(lm.tokens, lm.blank_id, frame_s)
    plain = BeamDecoder(lm, lm.defaults, frame_s)
    boosted = BeamDecoder(lm, replace(lm.defaults, hotwords=parse_hotwords([word], args.boost)), frame_s)
    decoders: dict[str, GreedyDecoder | BeamDecoder] = {"greedy": greedy, "beam": plain, "beam+hotword": boosted}
    out: dict[str, Any] = {"word": word, "in_lexicon": word in lm.word_index, "utterances": len(rows)}
    for name, decoder in decoders.items():
        texts = [decoder.decode(lp).text for lp in log_probs]
        out[name] = {
            "wer": round(float(jiwer.wer([r["text"] for r in rows], texts)), 4) if rows else None,
            "word_found": sum(word in t.split() for t in texts),
            "examples": texts[:3],
        }
    out["references"] = [r["text"] for r in rows[:3]]
    # The price: utterances without the word, where a boosted word can only do harm.
    others = [r for rows in test_sets(args).values() for r in rows if word not in r["text"].split()][:200]
    other_lps = log_probs_of(args.model, others)
    for name in ("beam", "beam+hotword"):
        texts = [decoders[name].decode(lp).text for lp in other_lps]
        wer = float(jiwer.wer([r["text"] for r in others], texts)) if others else None
        out[f"{name}_without_the_word"] = {
            "utterances": len(others),
            "wer": wer,
            "false_hits": sum(word in t.split() for t in texts),
        }
    print(json.dumps(out, indent=2))
    return out


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def load(base: str, bodies: list[bytes], decoder: str, concurrency: int, rounds: int) -> dict[str, float]:
    """Send every body ``rounds`` times with ``concurrency`` requests in flight."""
    queue = [b for _ in range(rounds) for b in bodies]
    latencies: list[float] = []

    async def worker(client: httpx.AsyncClient) -> None:
        while queue:
            body = queue.pop()
            started = time.perf_counter()
            r = await client.post(
                f"{base}/transcribe", params={"decoder": decoder}, content=body, headers={"content-type": "audio/flac"}
            )
            r.raise_for_status()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    async with httpx.AsyncClient(timeout=300) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    wall = time.perf_counter() - started
    return {
        "requests": len(latencies),
        "seconds": round(wall, 2),
        "requests_per_s": round(len(latencies) / wall, 2),
        "p50_ms": round(1000 * float(np.percentile(latencies, 50)), 1),
        "p95_ms": round(1000 * float(np.percentile(latencies, 95)), 1),
    }


def cmd_throughput(args: argparse.Namespace) -> dict[str, Any]:
    rows = read_manifest(args.synth)[: args.utterances] if args.synth and Path(args.synth).is_file() else []
    if not rows:
        rows = split_rows(Path(args.speechocean), "test")[: args.utterances]
    bodies = [Path(r["audio"]).read_bytes() if r["audio"].endswith(".flac") else _flac(r["audio"]) for r in rows]
    port = free_port()
    env = {
        **os.environ,
        "ASR_MODEL_PATH": str(args.model),
        "ASR_PORT": str(port),
        "ASR_HOST": "127.0.0.1",
        "ASR_LOG_LEVEL": "warning",
    }
    if args.lm:
        env["ASR_LM_PATH"] = str(args.lm)
    proc = subprocess.Popen([sys.executable, "-m", "app"], env=env, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, proc)
        asyncio.run(load(base, bodies[:8], "greedy", args.concurrency, 1))  # warm both paths
        asyncio.run(load(base, bodies[:8], "beam", args.concurrency, 1))
        # Rounds alternate between the decoders, so load from elsewhere on the machine hits both alike.
        runs: dict[str, list[dict[str, float]]] = {"greedy": [], "beam": []}
        for _ in range(args.rounds):
            for decoder in runs:
                runs[decoder].append(asyncio.run(load(base, bodies, decoder, args.concurrency, 1)))
        results: dict[str, Any] = {d: _merge(r) for d, r in runs.items()}
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    audio_s = sum(r["duration"] for r in rows) * args.rounds
    for stats in results.values():
        stats["audio_s_per_s"] = round(audio_s / stats["seconds"], 1)
    results["beam_vs_greedy_throughput"] = round(
        results["beam"]["requests_per_s"] / results["greedy"]["requests_per_s"], 3
    )
    print(json.dumps(results, indent=2))
    return results


def _merge(rounds: list[dict[str, float]]) -> dict[str, Any]:
    """Totals over rounds; latency percentiles are the rounds' medians."""
    requests, seconds = sum(r["requests"] for r in rounds), sum(r["seconds"] for r in rounds)
    return {
        "requests": requests,
        "seconds": round(seconds, 2),
        "requests_per_s": round(requests / seconds, 2),
        "p50_ms": float(np.median([r["p50_ms"] for r in rounds])),
        "p95_ms": float(np.median([r["p95_ms"] for r in rounds])),
        "per_round_requests_per_s": [r["requests_per_s"] for r in rounds],
    }


def _flac(path: str) -> bytes:
    from train.data.audio_io import flac_bytes

    return flac_bytes(read_audio(path))


def _wait_ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if proc.poll() is not None:
            raise SystemExit("the server exited")
        time.sleep(0.2)
    raise SystemExit("the server did not become ready")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["wer", "tune", "throughput", "hotwords", "hotword-demo"])
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "en-small")
    parser.add_argument("--lm", type=Path, default=None, help="LM folder (default: <model>/lm)")
    parser.add_argument("--synth", default="data/manifests/synth_test.jsonl", help="held-out synthetic manifest")
    parser.add_argument("--speechocean", default="../shared/data/speechocean762", help="speechocean762 folder")
    parser.add_argument("--cv100", default="../shared/data/cv100", help="cv100 folder (manifest.jsonl)")
    parser.add_argument("--limit", type=int, default=0, help="score only the first N utterances per set")
    parser.add_argument(
        "--partial-beam-size",
        type=int,
        default=Settings.model_fields["stream_partial_beam_size"].default,
        help="wer: the beam of stream partials (ASR_STREAM_PARTIAL_BEAM_SIZE)",
    )
    parser.add_argument(
        "--dev", nargs="+", default=["data/manifests/synth_dev.jsonl", "data/manifests/so762_dev.jsonl"]
    )
    parser.add_argument("--lm-weights", type=float, nargs="+", default=[0.3, 0.5, 0.7, 0.9, 1.2, 1.5])
    parser.add_argument("--word-scores", type=float, nargs="+", default=[-1.0, 0.0, 1.0, 2.0, 3.0])
    parser.add_argument("--beam-sizes", type=int, nargs="+", default=[8, 16, 32, 64])
    parser.add_argument(
        "--beam-tokens", type=int, nargs="+", default=[4, 8, 12], help="tokens tried per frame (beam_size_token)"
    )
    parser.add_argument(
        "--beam-thresholds", type=float, nargs="+", default=[10.0, 15.0, 20.0], help="score threshold (beam_threshold)"
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--utterances", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--word", default="jayme", help="hotword-demo: the word to boost")
    parser.add_argument("--boost", type=float, default=8.0, help="hotword-demo: its boost")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    commands = {
        "wer": cmd_wer,
        "tune": cmd_tune,
        "throughput": cmd_throughput,
        "hotwords": cmd_hotwords,
        "hotword-demo": cmd_hotword_demo,
    }
    results = commands[args.command](args)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
