"""What a request's ``prompt`` does for a word the models spell otherwise, against CTC hotwords.

On the test utterances that say ``--word`` (a name: by default "jayme", which speechocean762's
``test/`` sentences say and Whisper writes "Jamie" or "Jimmy"), and on the first ``--others``
utterances that do not: the second pass without and with the prompt (the word written as a name,
then a full stop: "Jayme."), the second pass with the word as a hotword (which it reads after the
prompt, capitalised: "Jayme."), and CTC beam search without and with the word as a hotword. Per
system: WER, how many hypotheses hold the word, and on the other utterances how many hold it where
it was not said. The served model as the server runs it (``bench.recognizers``), one utterance at
a time, every text through ``app.asr.text.spoken_form``.

    python -m bench.prompt_words --word jayme --sets so762_test
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import jiwer

from app.asr.beam import BeamDecoder, parse_hotwords
from app.asr.options import DecodeOptions
from app.asr.text import spoken_form
from bench.our_systems import DEFAULT_BUNDLE, OurModel
from bench.peers_accuracy import SETS, load_set, read_audio

RESULTS = Path(__file__).resolve().parent / "results"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--word", default="jayme", help="the word to prompt for (as spoken form)")
    parser.add_argument("--sets", default="so762_test", help=f"comma-separated, of {', '.join(SETS)}")
    parser.add_argument("--others", type=int, default=200, help="utterances without the word")
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--model", type=Path, default=DEFAULT_BUNDLE)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse(argv)
    word = args.word
    utterances = [u for name in args.sets.split(",") for u in load_set(name, args.data, None)]
    said = [u for u in utterances if word in spoken_form(u.text).split()]
    others = [u for u in utterances if word not in spoken_form(u.text).split()][: args.others]
    model = OurModel(args.model, "beam", args.threads)  # the served recognizer, its aligner and beam search
    beam = model.beam
    assert beam is not None  # OurModel refuses a bundle without an LM for beam search
    boosted = BeamDecoder(beam.lm, replace(beam.options, hotwords=parse_hotwords([word])), beam.frame_seconds)
    prompt = word.capitalize() + "."
    hotword_prompt = DecodeOptions.parse(hotwords=[word]).second_pass_prompt()
    systems = {
        "second pass": lambda wave: model.second_pass_text(wave),
        f"second pass, prompt {prompt!r}": lambda wave: model.second_pass_text(wave, prompt),
        f"second pass, hotword {word!r}": lambda wave: model.second_pass_text(wave, hotword_prompt),
        "CTC beam search": lambda wave: model.ctc_text(wave, beam),
        f"CTC beam search, hotword {word!r}": lambda wave: model.ctc_text(wave, boosted),
    }
    result: dict[str, Any] = {"word": word, "sets": args.sets, "said": len(said), "others": len(others), "systems": {}}
    for group, rows in (("said", said), ("others", others)):
        waves = [read_audio(u.audio) for u in rows]
        refs = [spoken_form(u.text) for u in rows]
        for name, run in systems.items():
            hyps = [spoken_form(run(wave)) for wave in waves]
            entry = result["systems"].setdefault(name, {})
            entry[group] = {
                "wer_percent": round(100 * jiwer.wer(refs, hyps), 1) if rows else None,
                "with_the_word": sum(word in h.split() for h in hyps),
                "examples": hyps[:3] if group == "said" else [],
            }
    print(f"{word!r}: said in {len(said)} utterances of {args.sets}; {len(others)} others")
    print("| system | WER % where said | holds the word | WER % elsewhere | holds it elsewhere |")
    print("|---|---|---|---|---|")
    for name, entry in result["systems"].items():
        s, o = entry["said"], entry["others"]
        said_cells = f"{s['wer_percent']} | {s['with_the_word']} of {len(said)}"
        print(f"| {name} | {said_cells} | {o['wer_percent']} | {o['with_the_word']} |")
    out = args.json or RESULTS / "prompt_words.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
