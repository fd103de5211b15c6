"""The model card (README.md) of a Whisper-encoder CTC bundle, written by ``asr-train-head export``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.asr.configs import BundleConfig
from app.asr.whisper.model import WhisperCTC
from train.card import LICENCES, cpu_name

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
    template = (Path(__file__).parent / "whisper_card_template.md").read_text()
    return template.format(
        name=config.name,
        encoder_layers=config.model.encoder_layers,
        d_model=config.model.d_model,
        vocab=len(config.tokens),
        frame_rate=config.frame_rate,
        params_m=model.num_parameters() / 1e6,
        stored_m=stored / 1e6,
        tuned=tuned,
        base=base,
        data_table=data_table(checkpoint, metas),
        last_frozen=frozen - 1,
        cache_lines=cache_lines(metas),
        step=step,
        lr_head=cfg["lr_head"],
        lr_blocks=cfg["lr_blocks"],
        weight_decay=cfg["weight_decay"],
        warmup_steps=cfg["warmup_steps"],
        max_hours=cfg["max_hours"],
        batch_frames=cfg["batch_frames"],
        augment=augment,
        dropout=cfg["dropout"],
        train_sets=train_sets,
        dev_sets=dev_sets,
        steps=state["step"],
        epochs=state["epoch"],
        hours=state["train_seconds"] / 3600,
        threads=cfg["threads"],
        cpu=cpu_name(),
        dev=dev,
        plot=plot,
        licences=LICENCES,
        dctts_licence=DCTTS_LICENCE,
    )
