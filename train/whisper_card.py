"""The model card (README.md) of a Whisper-encoder CTC bundle, written by ``asr-train-head export``."""

from __future__ import annotations

from typing import Any

from app.asr.configs import BundleConfig
from app.asr.whisper.model import WhisperCTC
from train.card import LICENCES, _cpu_name

DCTTS_LICENCE = (
    "| dctts-reader: LJSpeech 1.1 sentences (public domain) read by one amateur speaker, from"
    " [PhilippMatthes/dc_tts](https://github.com/PhilippMatthes/dc_tts) commit `5f20e75b` | training only"
    " | Apache-2.0 (the repository's licence) |"
)


def data_table(checkpoint: dict[str, Any], metas: dict[str, dict[str, Any]]) -> str:
    """One row per cached set: role, utterances, hours, repeats per epoch, and the manifest it came from."""
    lines = ["| set | role | utterances | hours | repeats per epoch | manifest |", "|---|---|---|---|---|---|"]
    for role in ("train", "dev"):
        for name, entry in checkpoint["data"][role].items():
            manifest = metas.get(name, {}).get("manifest", "?")
            repeats = entry.get("repeats", "-")
            lines.append(
                f"| {name} | {role} | {entry['utterances']} | {entry['hours']:.2f} | {repeats} | `{manifest}` |"
            )
    return "\n".join(lines)


def cache_lines(metas: dict[str, dict[str, Any]]) -> str:
    """The cache step's size and speed per set."""
    lines = []
    for name, meta in metas.items():
        rate = f", {meta['rate']:.0f} audio seconds per second" if "rate" in meta else ""
        lines.append(f"  - {name}: {meta['utterances']} utterances, {meta['hours']:.2f} h{rate}")
    return "\n".join(lines)


def model_card(
    config: BundleConfig,
    model: WhisperCTC,
    checkpoint: dict[str, Any],
    metas: dict[str, dict[str, Any]],
    has_plot: bool,
) -> str:
    """The markdown model card of a bundle exported from ``checkpoint``."""
    base = config.model.base
    cfg, state = checkpoint["train_config"], checkpoint["state"]
    stored = sum(t.numel() for t in model.trained_state().values())
    tuned = ", ".join(str(i) for i in config.model.tuned_layers) or "none"
    frozen = min(config.model.tuned_layers, default=config.model.encoder_layers)
    dev = ", ".join(f"{k} {100 * v:.1f} %" for k, v in config.metrics.items())
    plot = "\n![dev WER against training hours](convergence.png)\n" if has_plot else ""
    train_sets = " ".join(cfg["train"])
    dev_sets = " ".join(cfg["dev"])
    augment = (
        f"{cfg['time_masks']} time masks of up to {cfg['time_mask_frames']} frames and {cfg['channel_masks']}"
        f" channel masks of up to {cfg['channel_mask_width']} channels on the cached states"
        if cfg["augment"]
        else "no masking"
    )
    step = "the head only (encoder frozen)" if cfg["head_only"] else f"encoder block(s) {tuned} and the head"
    return f"""# {config.name}

Whisper tiny.en's pretrained audio encoder ({config.model.encoder_layers} transformer blocks, d_model
{config.model.d_model}) with a CTC head trained here over {len(config.tokens)} characters (CTC blank, space,
apostrophe, a-z): {config.frame_rate:.0f} output frames per second, {model.num_parameters() / 1e6:.2f} M parameters
in the acoustic model. The encoder runs at each utterance's own length (no padding to 30 s). Whisper's
pretrained decoder, from the same base, is available to the server as a second pass.

The bundle stores only what was trained here, {stored / 1e6:.2f} M parameters: the CTC head and encoder
block(s) {tuned} (fine-tuned copies of the pretrained ones). Every other weight is read from the base.

## Base

- pip package `{base.distribution}=={base.version}` (import name `{base.package}`), file `{base.file}`,
  sha256 `{base.sha256}` (checked at load time; nothing is downloaded at run time).
- Whisper tiny.en by OpenAI (Radford et al., 2022, [arXiv 2212.04356](https://arxiv.org/abs/2212.04356)),
  **MIT licence**, converted to CTranslate2 by Systran.

## Training data

{data_table(checkpoint, metas)}

Texts are normalised with `app.asr.text.normalize_text`. speechocean762 `test/` and any other evaluation
set were used neither for training, caching nor model selection.

## Recipe

1. `make whisper-cache`: the Whisper log-mel frontend, the encoder's convolution stem and the frozen
   blocks 0-{frozen - 1} run once per utterance; their states are stored in fp16 shards under
   `data/cache/whisper-tiny-en/<set>/`.
{cache_lines(metas)}
2. `make whisper-train`: {step} on the cached states, ln_post frozen, CTC loss; AdamW (peak rates
   {cfg["lr_head"]:g} for the head, {cfg["lr_blocks"]:g} for the blocks, weight decay {cfg["weight_decay"]:g}),
   {cfg["warmup_steps"]} warm-up steps then a cosine decay over the {cfg["max_hours"]:g} h budget; batches of
   about {cfg["batch_frames"]} padded frames from length-sorted, shuffled buckets; {augment}
   and dropout {cfg["dropout"]:g} before the head. Sets and repeats: `{train_sets}`; dev sets
   `{dev_sets}`. {state["step"]} steps ({state["epoch"]} full epochs) in {state["train_seconds"] / 3600:.2f} h on
   {cfg["threads"]} thread(s) of an {_cpu_name()}.
3. `make whisper-export`: the checkpoint with the lowest mean greedy dev WER, written with `save_bundle`.

Best greedy dev WER (model selection): {dev}.
{plot}
## Accuracy

Test-set WER per decoder, next to Whisper tiny.en through faster-whisper and pocketsphinx in the same
run with the same normaliser, comes from `make bench-peers` and is tabled with its command in
`docs/benchmarks.md` (and below, for the shipped bundle). The dev WERs above chose the checkpoint and
are not test results.

## Licences and citations

- Base: Whisper tiny.en, MIT.
- speechocean762: Zhang et al., "speechocean762: An Open-Source Non-native English Speech Corpus For
  Pronunciation Assessment", Interspeech 2021, [arXiv 2104.01378](https://arxiv.org/abs/2104.01378).

{LICENCES}{DCTTS_LICENCE}
"""
