"""The model card (a bundle's README.md), written from the checkpoint, evaluation and data summary."""

from __future__ import annotations

import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from app.asr.configs import ENGLISH_CHARS, BundleConfig
from app.asr.model import SepConvCTC
from train.evaluate import markdown_table
from train.runlog import Stage

LICENCES = (
    "\n".join(
        [
            "| data | use here | licence |",
            "|---|---|---|",
            "| speechocean762 `train/` (Zhang et al., Interspeech 2021, [arXiv 2104.01378](https://arxiv.org/abs/2104.01378))"
            " | training; dev (held-out speakers) | free for commercial and non-commercial use |",
            "| speechocean762 `test/` (other speakers) | evaluation only | as above |",
            "| espeak-ng voices (Debian `espeak-ng`) | synthetic training and test speech | GPL-3+ |",
            "| flite voices kal, kal16, awb, rms, slt (Debian `flite`) | synthetic training and test speech"
            " | BSD-style (CMU), see the package's copyright file |",
            "| festival with kal/ked diphone and slt HTS voices (Debian `festival`, `festvox-*`)"
            " | synthetic training speech | X11-style (CMU/Edinburgh), BSD-3-clause and EST-2003 |",
            "| WordNet glosses and examples (Debian `dict-wn`) | sentences | WordNet 3.0 licence |",
            "| GCIDE definitions and citations (Debian `dict-gcide`) | sentences | GPL |",
            "| fortune cookies (Debian `fortunes`, `fortunes-min`) | sentences | BSD-style |",
            "| `/usr/share/dict/american-english` (Debian `wamerican`) | word filter | public-domain-style (SCOWL) |",
        ]
    )
    + "\n"
)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def architecture_table(config: BundleConfig) -> str:
    """One row per block of the separable-convolution network."""
    lines = ["| block | channels | kernel | repeat | stride | dilation | residual |", "|---|---|---|---|---|---|---|"]
    for i, b in enumerate(config.model.blocks):
        lines.append(f"| {i} | {b.channels} | {b.kernel} | {b.repeat} | {b.stride} | {b.dilation} | {b.residual} |")
    return "\n".join(lines)


def token_kinds(tokens: list[str]) -> str:
    """What the output tokens are, in words."""
    kinds = "CTC blank, space, apostrophe, a-z"
    pieces = len(tokens) - len(ENGLISH_CHARS)
    return f"{kinds} and {pieces} word pieces learned from the training text" if pieces > 0 else kinds


def clean_epochs(augment_from_epoch: int) -> str:
    """The card's sentence on which epochs train on clean audio."""
    if augment_from_epoch <= 0:
        return "every epoch is augmented"
    if augment_from_epoch == 1:
        return "the first epoch uses clean audio"
    return f"the first {augment_from_epoch} epochs use clean audio"


def wer_table(results: dict[str, Any] | None) -> str:
    """Per test set WER/CER for fp32 and int8, in percent."""
    if not results:
        return "_No evaluation results were given to the exporter._"
    sizes = results.get("sizes_mb", {})
    size_lines = "\n".join(f"- {name}: {mb:.2f} MB" for name, mb in sizes.items())
    return markdown_table(results) + "\nSizes of the acoustic model:\n\n" + size_lines


def training_data(checkpoint: dict[str, Any], summary: dict[str, Any]) -> str:
    """The manifests used, with their repeat factors, and the synthetic data summary."""
    cfg = checkpoint["train_config"]
    lines = [
        f"- training manifests (`path[:repeats per epoch]`): {', '.join(f'`{t}`' for t in cfg['train'])}",
        f"- dev manifests (model selection by mean dev WER): {', '.join(f'`{d}`' for d in cfg['dev'])}",
    ]
    for split in ("synth_train", "synth_dev", "synth_test"):
        if split in summary:
            s = summary[split]
            lines.append(f"- {split}: {s['utterances']} utterances, {s['hours']:.2f} hours")
    return "\n".join(lines)


def model_card(
    config: BundleConfig,
    model: SepConvCTC,
    checkpoint: dict[str, Any],
    results: dict[str, Any] | None,
    summary: dict[str, Any],
    has_plot: bool,
    notes: str = "",
    stages: Sequence[Stage] = (),
) -> str:
    """The markdown model card; ``stages`` are the chain of runs that led to the checkpoint."""
    state = checkpoint["state"]
    cfg = checkpoint["train_config"]
    hours = state["train_seconds"] / 3600
    steps = state["step"]
    chain = ""
    if len(stages) > 1:
        hours, steps = sum(s.hours for s in stages), sum(s.steps for s in stages)
        parts = [f"{s.hours:.2f} h ({s.steps} steps, `{s.log.parent}`)" for s in stages]
        chain = f" in {len(stages)} runs, each from the one before's weights: {', then '.join(parts)}"
    params = model.num_parameters()
    plot = "![dev WER against training hours](convergence.png)\n" if has_plot else ""
    template = (Path(__file__).parent / "card_template.md").read_text()
    return template.format(
        name=config.name,
        params=params,
        params_m=params / 1e6,
        stride=config.model.stride,
        frame_rate=config.frame_rate,
        n_mels=config.frontend.n_mels,
        vocab=len(config.tokens),
        unit="word-piece" if len(config.tokens) > len(ENGLISH_CHARS) else "character-level",
        token_kinds=token_kinds(config.tokens),
        architecture=architecture_table(config),
        data=training_data(checkpoint, summary),
        licences=LICENCES,
        cpu=cpu_name(),
        threads=cfg["threads"],
        device=cfg["device"],
        hours=hours,
        steps=steps,
        chain=chain,
        epochs=state["epoch"],
        batch_seconds=cfg["batch_seconds"],
        lr=cfg["lr"],
        warmup=cfg["warmup_steps"],
        augment_strength=cfg.get("augment_strength", 1.0),
        clean_epochs=clean_epochs(cfg.get("augment_from_epoch", 0)),
        best_dev=100 * state["best_dev"],
        plot=plot,
        wer_table=wer_table(results),
        notes=notes or "None recorded.",
    )
