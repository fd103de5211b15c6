"""The CTC head shapes compared by ``train.head_shapes``: what each reads, that each learns, and the report."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from train.config import HeadConfig
from train.head_shapes import SHAPES, CTCHead, ShapeRun, head_config, report

D_MODEL, VOCAB = 32, 7


def head(shape: str) -> CTCHead:
    torch.manual_seed(0)
    return CTCHead(shape, nn.LayerNorm(D_MODEL), VOCAB, dropout=0.0, kernel=3, hidden=16)


@pytest.mark.parametrize("shape", SHAPES)
def test_a_padded_row_reads_as_it_would_alone(shape: str) -> None:
    model = head(shape).eval()
    short, long = torch.randn(1, 9, D_MODEL), torch.randn(1, 15, D_MODEL)
    batch = torch.zeros(2, 15, D_MODEL)
    batch[0, :9], batch[1] = short[0], long[0]
    batch[0, 9:] = 5.0  # whatever lies past a row's length is not read
    out = model(batch, torch.tensor([9, 15]))
    assert out.shape == (2, 15, VOCAB)
    assert torch.allclose(out.exp().sum(-1), torch.ones(2, 15), atol=1e-5)
    assert torch.allclose(out[0, :9], model(short, torch.tensor([9]))[0], atol=1e-5)
    assert torch.allclose(out[1], model(long, torch.tensor([15]))[0], atol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
def test_each_shape_learns_and_the_layer_norm_stays_frozen(shape: str) -> None:
    model = head(shape)
    norm = model.ln_post.weight.clone()
    states = torch.randn(4, 20, D_MODEL)
    lengths = torch.tensor([20, 18, 15, 12])
    targets = torch.tensor([[1, 2, 3], [2, 3, 4], [4, 5, 6], [6, 5, 1]])

    def loss() -> torch.Tensor:
        log_probs = model(states, lengths).transpose(0, 1)
        return F.ctc_loss(log_probs, targets, lengths, torch.full((4,), 3), blank=0)

    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    first = loss().item()
    for _ in range(40):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    assert loss().item() < 0.5 * first
    assert torch.equal(model.ln_post.weight, norm)
    assert model.trainable() == sum(p.numel() for n, p in model.named_parameters() if not n.startswith("ln_post"))


def test_an_unknown_shape_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown head shape 'gru'"):
        CTCHead("gru", nn.LayerNorm(D_MODEL), VOCAB, dropout=0.0)


def test_the_report_has_a_row_per_shape(tmp_path: Path) -> None:
    paths = []
    runs = (
        ("linear", 0.5, {"init_head": True, "steps": 0}),
        ("conv", 0.45, {"init_head": True}),
        ("lstm", 0.4, {}),
        ("lstm", 0.42, {"depth": 3}),
    )
    for shape, wer, settings in runs:
        result = {
            "shape": shape,
            "settings": {"steps": 3000, **settings},
            "trainable_parameters": 11111,
            "seconds_per_step": 0.2,
            "best_dev_greedy": {"synth_dev": wer, "mean": wer, "step": 300},
            "test": {"cv100_eval": {"utterances": 100, "greedy": wer + 0.2, "beam": wer}},
        }
        paths.append(tmp_path / f"{shape}-{len(paths)}.json")
        paths[-1].write_text(json.dumps(result))
    lines = report(paths).splitlines()
    assert lines[0].startswith("| head | trainable parameters | s/step | best step | dev synth_dev greedy")
    assert lines[2] == "| the bundle's head | 11,111 | - | 300 | 50.0 | 50.0 | 70.0 | 50.0 |"
    assert lines[3] == "| conv, from the bundle's head | 11,111 | 0.2 | 300 | 45.0 | 45.0 | 65.0 | 45.0 |"
    assert lines[4] == "| lstm | 11,111 | 0.2 | 300 | 40.0 | 40.0 | 60.0 | 40.0 |"
    assert lines[5] == "| lstm, after 3 of 4 blocks | 11,111 | 0.2 | 300 | 42.0 | 42.0 | 62.0 | 42.0 |"


def test_a_run_s_dropout_and_spec_augment_reach_the_recipe_s_settings() -> None:
    """Unset, they are the recipe's own; set, the batches and the head get them."""
    assert head_config(ShapeRun()) == replace(
        HeadConfig(), train=ShapeRun().train, dev=ShapeRun().dev, cache_root=ShapeRun().cache_root,
        tuned_layers=[], max_steps=ShapeRun().steps,
    )  # fmt: skip
    run = ShapeRun(dropout=0.3, time_masks=4, time_mask_frames=15, channel_masks=6, channel_mask_width=48)
    cfg = head_config(run)
    assert (cfg.dropout, cfg.time_masks, cfg.time_mask_frames, cfg.channel_masks, cfg.channel_mask_width) == (
        0.3, 4, 15, 6, 48,
    )  # fmt: skip
