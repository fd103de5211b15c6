"""Make a trained model deeper without changing what it computes (``asr-grow``).

A model that cannot fit its own training data needs more capacity, and training a bigger one
from scratch throws away everything the small one learned. This inserts new residual blocks,
each a copy of the shape of the block before it, initialised so that the grown model gives the
same output as the original:

- the new block's main path ends in a batch norm with zero scale and shift, so it adds nothing;
- its residual path (a 1x1 convolution and a batch norm) starts as the identity. The batch norm's
  running statistics and its affine parameters are both set to the per-channel mean and standard
  deviation of the block's input, measured on training audio, so the path is the identity in
  evaluation mode exactly, and close to it in training mode, where batch statistics are used.

``asr-train --init`` then fine-tunes the grown bundle like any other.

Example::

    asr-grow --model models/en-small --after 2 4 --manifest data/manifests/synth_train.jsonl \\
             data/manifests/so762_train.jsonl --out runs/en-small-deep/init
"""

from __future__ import annotations

import argparse
import logging
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from app.asr.bundle import Bundle, build_model, load_bundle, save_bundle
from app.asr.configs import BlockConfig, BundleConfig
from app.asr.model import SepConvCTC
from train.data.audio_io import read_audio, read_manifest

logger = logging.getLogger(__name__)


def deeper_config(config: BundleConfig, after: list[int]) -> tuple[BundleConfig, list[int]]:
    """``config`` with a new stride-1 residual block after each block index in ``after``.

    Returns the new config and, for each original block, its index in the grown network.
    """
    if not after:
        raise ValueError("name at least one block to insert after")
    blocks: list[BlockConfig] = []
    positions = []
    for i, block in enumerate(config.model.blocks):
        positions.append(len(blocks))
        blocks.append(block)
        if i in after:
            blocks.append(block.model_copy(update={"stride": 1, "residual": True}))
    unknown = sorted(set(after) - set(range(len(config.model.blocks))))
    if unknown:
        raise ValueError(f"no block {unknown} in a network of {len(config.model.blocks)} blocks")
    model = config.model.model_copy(update={"blocks": blocks})
    grown = BundleConfig.model_validate({**config.model_dump(), "model": model.model_dump(), "metrics": {}})
    return grown, positions


@torch.no_grad()
def block_output_stats(
    bundle: Bundle, waves: list[np.ndarray], blocks: list[int]
) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Per-channel mean and standard deviation of each of ``blocks``' outputs over the valid frames.

    One forward pass per wave; hooks on the blocks read their outputs and valid lengths.
    """
    sums: dict[int, list[torch.Tensor]] = {}
    frames = dict.fromkeys(blocks, 0)

    def measure(i: int) -> Callable[[nn.Module, tuple[torch.Tensor, torch.Tensor], torch.Tensor], None]:
        def hook(_: nn.Module, inputs: tuple[torch.Tensor, torch.Tensor], output: torch.Tensor) -> None:
            valid = output[0, :, : int(inputs[1][0])].double()
            moments = [valid.sum(1), valid.square().sum(1)]
            sums[i] = [a + b for a, b in zip(sums[i], moments, strict=True)] if i in sums else moments
            frames[i] += valid.shape[1]

        return hook

    handles = [bundle.model.blocks[i].register_forward_hook(measure(i)) for i in blocks]
    try:
        for wave in waves:
            audio = torch.from_numpy(wave.astype(np.float32))[None]
            bundle.model(*bundle.frontend(audio, torch.tensor([audio.shape[1]])))
    finally:
        for handle in handles:
            handle.remove()
    stats = {}
    for i in blocks:
        if not frames[i]:
            raise ValueError("no audio to measure the activations on")
        total, squares = sums[i]
        mean = total / frames[i]
        std = (squares / frames[i] - mean.square()).clamp_min(1e-4).sqrt()
        stats[i] = (mean.float(), std.float())
    return stats


def deepen(bundle: Bundle, after: list[int], waves: list[np.ndarray]) -> tuple[BundleConfig, SepConvCTC]:
    """A deeper copy of ``bundle``'s model that computes the same function (see module doc).

    ``waves``: float audio at the model's sample rate, to measure the new blocks' inputs on.
    """
    config, positions = deeper_config(bundle.config, after)
    _, model = build_model(config)
    state = model.state_dict()
    for key, tensor in bundle.model.state_dict().items():
        if key.startswith("blocks."):
            _, index, rest = key.split(".", 2)
            key = f"blocks.{positions[int(index)]}.{rest}"
        state[key] = tensor.clone()
    for i, (mean, std) in block_output_stats(bundle, waves, after).items():
        new = positions[i] + 1
        last = len(model.blocks[new].layers) - 1
        state[f"blocks.{new}.layers.{last}.norm.weight"].zero_()
        state[f"blocks.{new}.layers.{last}.norm.bias"].zero_()
        norm = model.blocks[new].residual[1]  # type: ignore[index]
        state[f"blocks.{new}.residual.0.weight"] = torch.eye(mean.numel())[:, :, None]
        state[f"blocks.{new}.residual.1.running_mean"] = mean.clone()
        state[f"blocks.{new}.residual.1.running_var"] = std.square() - norm.eps
        state[f"blocks.{new}.residual.1.weight"] = std.clone()
        state[f"blocks.{new}.residual.1.bias"] = mean.clone()
    model.load_state_dict(state)
    model.eval()
    return config, model


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="bundle folder to grow")
    parser.add_argument("--after", type=int, nargs="+", required=True, help="block indices to insert a block after")
    parser.add_argument(
        "--manifest", type=Path, nargs="+", required=True, help="training audio to measure activations on"
    )
    parser.add_argument("--utterances", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--out", required=True, help="folder for the grown bundle")
    args = parser.parse_args(argv)
    bundle = load_bundle(args.model)
    rows = [row for manifest in args.manifest for row in read_manifest(manifest)]
    sample = random.Random(args.seed).sample(rows, min(args.utterances, len(rows)))
    config, model = deepen(bundle, args.after, [read_audio(row["audio"]) for row in sample])
    card = (
        f"# {config.name} (grown)\n\n{args.model} with a new residual block after blocks "
        f"{', '.join(map(str, args.after))}: {model.num_parameters()} parameters, "
        f"the same output as the original until fine-tuned (`asr-train --init`).\n"
    )
    save_bundle(args.out, config, model, card)
    logger.info(
        "%s: %d -> %d parameters, written to %s",
        args.model,
        bundle.num_parameters(),
        model.num_parameters(),
        args.out,
    )


if __name__ == "__main__":
    main()
