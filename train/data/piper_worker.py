"""Piper's voice as a long-running program: one JSON request per stdin line, one WAV file each.

Run by ``train.data.piper_voice`` with the Python of Piper's own virtual environment
(``build/piper-venv``), so the voice loads once instead of once per sentence. This file imports
``piper`` (``piper-tts``, GPL-3.0): it is a data script, run as its own program, and nothing in
``app/`` or the rest of ``train/`` imports it.

Request: ``{"text": ..., "wav": path, "length_scale": f, "noise_scale": f, "noise_w_scale": f}``
(the three scales optional: the voice's own defaults). Reply per request: the WAV path, or
``error: ...`` and the worker goes on.
"""

from __future__ import annotations

import json
import sys
import wave

from piper import PiperVoice, SynthesisConfig


def main() -> None:
    voice = PiperVoice.load(sys.argv[1])
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        config = SynthesisConfig(
            length_scale=request.get("length_scale"),
            noise_scale=request.get("noise_scale"),
            noise_w_scale=request.get("noise_w_scale"),
        )
        try:
            with wave.open(request["wav"], "wb") as wav_file:
                voice.synthesize_wav(request["text"], wav_file, syn_config=config)
            print(request["wav"], flush=True)
        except Exception as error:  # one bad sentence must not end a run of thousands
            print(f"error: {error}", flush=True)


if __name__ == "__main__":
    main()
