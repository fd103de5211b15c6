"""``python -m train.head_shapes``: a head shape trained on the frozen encoder's cached states of a few
spoken utterances, chosen on a dev set and scored greedily and with the shipped LM's beam search."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from app.config import DEFAULT_MODEL_PATH
from tests.support import spoken_manifest
from train import head_shapes
from train.whisper_cache import CacheConfig, run_cache

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng missing: run scripts/install-tts.sh"
)


def test_a_shape_trains_on_cached_states_and_is_scored(tmp_path: Path) -> None:
    train = spoken_manifest(tmp_path, "mine", ["open the door", "close the window", "turn on the light"])
    dev = spoken_manifest(tmp_path, "mine_dev", ["open the window", "turn off the light"])
    metas = head_shapes.cache([f"mine={train}", f"mine_dev={dev}"], str(tmp_path / "cache"), threads=1)
    assert metas["mine"]["frozen_blocks"] == 4 and metas["mine"]["utterances"] == 3

    args = {
        "--shape": "conv", "--steps": 6, "--eval-steps": 3, "--warmup-steps": 2, "--train": "mine:2",
        "--dev": "mine_dev", "--test": "mine_dev", "--cache-root": tmp_path / "cache", "--out": tmp_path / "runs",
        "--threads": 1,
    }  # fmt: skip
    result = head_shapes.run(["train", *(str(x) for item in args.items() for x in item)])

    assert [point["step"] for point in result["curve"]] == [3, 6]
    best = result["best_dev_greedy"]
    assert best["step"] in (3, 6) and best["mean"] == min(p["dev_greedy"]["mean"] for p in result["curve"])
    scores = result["test"]["mine_dev"]
    assert scores["utterances"] == 2 and scores["greedy"] >= 0 and scores["beam"] >= 0
    saved = tmp_path / "runs" / "conv" / "result.json"
    assert json.loads(saved.read_text())["trainable_parameters"] == result["trainable_parameters"]
    assert head_shapes.run(["report", str(saved)]).splitlines()[2].startswith("| conv | ")


def test_a_cache_of_the_recipe_s_depth_is_refused(tmp_path: Path) -> None:
    """States cached before a tuned block (``asr-train-head cache``) are not the frozen encoder's last."""
    train = spoken_manifest(tmp_path, "mine", ["open the door"])
    run_cache(CacheConfig(sets=[f"mine={train}"], root=str(tmp_path / "cache"), tuned_layers=[3], threads=1))
    with pytest.raises(SystemExit, match="after 3 blocks"):
        args = {"--train": "mine", "--dev": "mine", "--test": "mine", "--cache-root": tmp_path / "cache"}
        head_shapes.run(["train", "--out", str(tmp_path / "runs"), *(str(x) for item in args.items() for x in item)])


def test_states_of_another_encoder_are_refused(tmp_path: Path) -> None:
    """States cached from the shipped bundle's tuned encoder are not the pretrained one's, and the
    other way round; a set not cached is named."""
    train = spoken_manifest(tmp_path, "mine", ["open the door"])
    head_shapes.cache([f"mine={train}"], str(tmp_path / "tuned"), threads=1, bundle=str(DEFAULT_MODEL_PATH))
    head_shapes.cache([f"mine={train}"], str(tmp_path / "pretrained"), threads=1)
    sets = ["--train", "mine", "--dev", "mine", "--test", "mine", "--out", str(tmp_path / "runs")]
    with pytest.raises(SystemExit, match="another encoder than the pretrained"):
        head_shapes.run(["train", "--cache-root", str(tmp_path / "tuned"), *sets])
    with pytest.raises(SystemExit, match="another encoder than models/"):
        head_shapes.run(
            ["train", "--cache-root", str(tmp_path / "pretrained"), "--bundle", "models/en-whisper-tiny", *sets]
        )
    with pytest.raises(SystemExit, match="cached with other settings {'encoder_bundle'"):
        head_shapes.cache([f"mine={train}"], str(tmp_path / "pretrained"), threads=1, bundle=str(DEFAULT_MODEL_PATH))
    with pytest.raises(SystemExit, match="cached with other settings {'encoder_bundle'"):
        head_shapes.cache([f"mine={train}"], str(tmp_path / "tuned"), threads=1)
    with pytest.raises(SystemExit, match="theirs is not cached"):
        head_shapes.run(["train", "--cache-root", str(tmp_path / "pretrained"), *sets[:5], "theirs", *sets[6:]])


def test_a_bundle_s_own_head_scores_at_step_0(tmp_path: Path) -> None:
    """With --init-head a conv head starts as the bundle's linear head exactly: 0 steps score it alone,
    and the bundle's encoder's states give the shipped model's greedy transcript."""
    dev = spoken_manifest(tmp_path, "mine_dev", ["open the window please", "turn off the light"])
    bundle = str(DEFAULT_MODEL_PATH)
    head_shapes.cache([f"mine_dev={dev}"], str(tmp_path / "tuned"), threads=1, bundle=bundle)
    args = ["--dev", "mine_dev", "--test", "mine_dev", "--train", "mine_dev", "--cache-root", str(tmp_path / "tuned")]
    args += ["--bundle", bundle, "--out", str(tmp_path / "runs"), "--steps", "0"]
    conv = head_shapes.run(["train", "--shape", "conv", "--init-head", *args])
    linear = head_shapes.run(["train", "--shape", "linear", "--init-head", *args])
    assert [p["step"] for p in conv["curve"]] == [0] and conv["best_dev_greedy"]["step"] == 0
    assert conv["best_dev_greedy"] == linear["best_dev_greedy"] and conv["test"] == linear["test"]
    assert conv["best_dev_greedy"]["mine_dev"] < 0.5  # the shipped head reads clear speech
    with pytest.raises(SystemExit, match="--init-head starts a linear or conv head"):
        head_shapes.run(["train", "--shape", "lstm", "--init-head", *args])
