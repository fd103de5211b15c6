"""The training recipe's command lines come from its config dataclasses (``train.config.add_flags``)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from train.config import add_flags, given
from train.decoder_adapter import AdapterConfig


def parse(argv: list[str]) -> AdapterConfig:
    parser = argparse.ArgumentParser()
    add_flags(parser, AdapterConfig)
    return AdapterConfig(**given(parser.parse_args(argv)))


def test_flags_follow_the_fields_types_defaults_and_choices() -> None:
    cfg = parse(["--train", "a", "b:3", "--dev", "d", "--out", "runs/x", "--steps", "7", "--lr", "0.5"])
    assert cfg.train == ["a", "b:3"] and cfg.dev == ["d"]
    assert cfg.out == Path("runs/x") and isinstance(cfg.model, Path)
    assert (cfg.steps, cfg.lr, cfg.rank, cfg.resume) == (7, 0.5, 16, False)
    assert cfg.layers == AdapterConfig.__dataclass_fields__["layers"].default
    cfg = parse(["--train", "a", "--dev", "d", "--out", "o", "--layers", "mlp.0", "attn.out", "--resume"])
    assert cfg.layers == ("mlp.0", "attn.out") and cfg.resume is True


@pytest.mark.parametrize(
    "argv",
    [
        ["--dev", "d", "--out", "o"],  # --train has no default
        ["--train", "a", "--dev", "d", "--out", "o", "--layers", "everything"],  # not a layer
        ["--train", "a", "--dev", "d", "--out", "o", "--steps", "many"],  # not an int
    ],
)
def test_a_missing_or_malformed_flag_is_a_usage_error(argv: list[str]) -> None:
    with pytest.raises(SystemExit):
        parse(argv)
