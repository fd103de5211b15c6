"""What running Whisper's encoder at each clip's own length (instead of padded to 30 s) does to WER.

For the CTC path (the bundle's encoder and head, greedy) and for the second pass (Whisper's
pretrained encoder and decoder), on the first ``--limit`` clips of cv100::

    python -m bench.own_length --model models/en-whisper-tiny --limit 40

Padded means the clip's log-mel frames zero-padded to 3000 (30 s), as Whisper runs; own length
means only the clip's frames. The CTC path reads the padded states of the clip's frames only.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jiwer
import torch

from app.asr.bundle import load_bundle
from app.asr.ctc import GreedyDecoder
from app.asr.text import spoken_form
from app.asr.whisper.greedy import token_caps
from app.asr.whisper.model import WhisperCTC
from bench.report import ROOT
from train.data.audio_io import read_audio


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=ROOT / "models" / "en-whisper-tiny")
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--limit", type=int, default=40)
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    bundle = load_bundle(args.model)
    model, second = bundle.model, bundle.second_pass
    if not isinstance(model, WhisperCTC) or second is None:
        raise SystemExit(f"{args.model} is not a Whisper CTC bundle")
    config = bundle.config
    greedy = GreedyDecoder(config.tokens, config.blank_id, config.frame_seconds, config.word_delimiter)
    manifest = args.data / "cv100" / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()[: args.limit]]
    refs, hyps = (
        [spoken_form(r["text"]) for r in rows],
        {k: list[str]() for k in ("ctc_own", "ctc_padded", "attn_own", "attn_padded")},
    )
    started = time.perf_counter()
    with torch.inference_mode():
        for row in rows:
            audio = torch.from_numpy(read_audio(manifest.parent / row["audio"]))[None]
            feats, lengths = bundle.frontend(audio, torch.tensor([audio.shape[1]]))
            padded = torch.nn.functional.pad(feats, (0, 3000 - feats.shape[-1]))
            n_out = int((lengths[0] + 1) // 2)
            own, _ = model(feats, lengths)
            full, _ = model(padded, torch.tensor([3000]))
            hyps["ctc_own"].append(greedy.decode(own[0].numpy()).text)
            hyps["ctc_padded"].append(greedy.decode(full[0, :n_out].numpy()).text)
            states, state_lengths = second.encoder(feats, lengths)
            caps = token_caps([int(lengths[0])])
            own_ids = second.decoder.greedy(states, state_lengths, second.rules, caps)[0]
            hyps["attn_own"].append(spoken_form(second.tokenizer.decode(own_ids)))
            hyps["attn_padded"].append(spoken_form(second.transcribe(feats, lengths)[0]))
    result = {name: round(100 * jiwer.wer(refs, h), 1) for name, h in hyps.items()}
    print(json.dumps({"clips": len(rows), "wer_percent": result, "seconds": round(time.perf_counter() - started)}))
    return result


if __name__ == "__main__":
    main()
