"""``python -m train.head_fusion``: two heads on two encoders' cached states of the same spoken
utterances, their frame posteriors mixed at the weight the dev set chooses."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from app.config import DEFAULT_MODEL_PATH
from tests.support import spoken_manifest
from train import head_fusion, head_shapes

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng missing: run scripts/install-tts.sh"
)


def cli(*parts: object) -> list[str]:
    return [str(part) for part in parts]


def test_two_heads_on_two_encoders_are_mixed_and_scored(tmp_path: Path) -> None:
    """Head A reads the pretrained encoder after 3 blocks, head B is the shipped bundle's own head on
    its tuned encoder; weight 1 scores A alone and weight 0 B alone, as their own runs scored them."""
    dev = spoken_manifest(tmp_path, "mine_dev", ["open the window please", "turn off the light"])
    bundle = str(DEFAULT_MODEL_PATH)
    metas = head_shapes.cache([f"mine_dev={dev}"], str(tmp_path / "block3"), threads=1, depth=3)
    assert metas["mine_dev"]["frozen_blocks"] == 3
    head_shapes.cache([f"mine_dev={dev}"], str(tmp_path / "tuned"), threads=1, bundle=bundle)
    sets = ["--dev", "mine_dev", "--test", "mine_dev", "--train", "mine_dev", "--threads", "1"]
    a = head_shapes.run(
        cli("train", "--depth", 3, "--steps", 2, "--eval-steps", 1, "--warmup-steps", 1, *sets)
        + cli("--cache-root", tmp_path / "block3", "--out", tmp_path / "a")
    )
    b = head_shapes.run(
        cli("train", "--init-head", "--bundle", bundle, "--steps", 0, *sets)
        + cli("--cache-root", tmp_path / "tuned", "--out", tmp_path / "b")
    )
    out = tmp_path / "fusion.json"
    runs = cli(tmp_path / "a" / "linear", tmp_path / "b" / "linear")
    result = head_fusion.run(runs + cli("--dev", "mine_dev", "--test", "mine_dev", "--threads", 1, "--out", out))

    frames = result["frames"]
    assert json.loads(out.read_text())["frames"]["weight_of_a"] == frames["weight_of_a"] in head_fusion.WEIGHTS
    scores = frames["test"]["mine_dev"]
    assert scores["1.0"] == {k: a["test"]["mine_dev"][k] for k in ("greedy", "beam")}
    assert scores["0.0"] == {k: b["test"]["mine_dev"][k] for k in ("greedy", "beam")}
    assert scores["0.0"]["greedy"] < 0.5  # the shipped head reads clear speech
    chosen = frames["dev_greedy"][str(frames["weight_of_a"])]["mean"]
    assert chosen == min(point["mean"] for point in frames["dev_greedy"].values())
    # the candidates' choice: no better than their best, and it reads clear speech
    sequences = result["sequences"]
    assert sequences["setting"]["weight_of_a"] in head_fusion.WEIGHTS and sequences["candidates"] >= 1
    assert sequences["oracle"]["mine_dev"] <= sequences["test"]["mine_dev"] < 0.5
    assert sequences["dev"]["mean"] == sequences["dev"]["mine_dev"] == sequences["test"]["mine_dev"]


def test_heads_on_other_utterances_are_refused(tmp_path: Path) -> None:
    """Two cache roots must hold the same utterances of a set in the same order, each of the encoder its
    head trained on; a folder without a head is named."""
    mine = spoken_manifest(tmp_path, "mine", ["open the window please"])
    theirs = spoken_manifest(tmp_path, "theirs", ["turn off the light"])
    head_shapes.cache([f"mine={mine}"], str(tmp_path / "one"), threads=1)
    head_shapes.cache([f"mine={theirs}"], str(tmp_path / "two"), threads=1)
    for root in ("one", "two"):
        args = cli("train", "--steps", 1, "--eval-steps", 1, "--warmup-steps", 1, "--threads", 1)
        args += cli("--train", "mine", "--dev", "mine", "--test", "mine", "--cache-root", tmp_path / root)
        head_shapes.run(args + cli("--out", tmp_path / root / "runs"))
    runs = [str(tmp_path / root / "runs" / "linear") for root in ("one", "two")]
    with pytest.raises(SystemExit, match="mine: the two cache roots hold other utterances"):
        head_fusion.run([*runs, "--dev", "mine", "--test", "mine", "--threads", "1"])
    with pytest.raises(SystemExit, match="has no head.pt"):
        head_fusion.run([str(tmp_path), runs[1], "--dev", "mine", "--test", "mine"])
    # a head that trained on the shipped bundle's encoder, its cache root now holding the pretrained one's states
    tuned = tmp_path / "tuned-head"
    shutil.copytree(runs[0], tuned)
    result = json.loads((tuned / "result.json").read_text())
    result["settings"]["bundle"] = str(DEFAULT_MODEL_PATH)
    (tuned / "result.json").write_text(json.dumps(result))
    with pytest.raises(SystemExit, match="holds the states of another encoder than .*en-whisper-tiny.s"):
        head_fusion.run([runs[0], str(tuned), "--dev", "mine", "--test", "mine", "--threads", "1"])
