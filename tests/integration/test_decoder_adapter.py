"""The decoder's low-rank adapter: cached windows, training (the loss falls), export into a bundle,
and the adapted decoder served alike by the PyTorch and the ONNX second passes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.numpy import load_file, save_file

from app.asr.bundle import load_bundle
from app.asr.bundle_files import CONFIG_FILE, WEIGHTS_FILE, BundleError
from app.asr.configs import WhisperCTCConfig
from app.asr.features import WhisperLogMel
from app.asr.slim.bundle import load_whisper_bundle
from app.asr.slim.second_pass import SlimSecondPass
from app.asr.whisper.adapter import ADAPTED, PREFIX, adapted, adapter_shapes
from app.asr.whisper.base import base_file, load_base
from tests.integration.test_whisper_head import chirps
from tests.support import cv100_clips
from train import decoder_adapter
from train.decoder_adapter import whisper_style

SHIPPED = Path("models/en-whisper-tiny")
TEXTS = ["go", "yes no", "a cat", "hi there"]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Four tiny utterances cached, 12 training steps, and the adapter exported into a copy of the
    shipped bundle."""
    root = tmp_path_factory.mktemp("decoder-adapter")
    rows = []
    for i, text in enumerate(TEXTS):
        sf.write(root / f"{i}.wav", chirps(text, i), 16000)
        rows.append(json.dumps({"audio": f"{i}.wav", "text": text, "duration": 1.0}))
    (root / "tiny.jsonl").write_text("\n".join(rows) + "\n")
    (root / "held_out.jsonl").write_text(json.dumps({"audio": "0.wav", "text": "Go!"}) + "\n")
    bundle = root / "bundle"
    shutil.copytree(SHIPPED, bundle)
    _strip_adapter(bundle)
    cache = root / "cache" / "tiny"
    decoder_adapter.run(["cache", "--manifest", str(root / "tiny.jsonl"), "--out", str(cache), "--model", str(bundle),
                         "--states", "window"])  # fmt: skip
    decoder_adapter.run(["cache", "--manifest", str(root / "tiny.jsonl"), "--out", str(root / "cache" / "kept"),
                         "--model", str(bundle), "--exclude", str(root / "held_out.jsonl")])  # fmt: skip
    args = ["--train", f"{cache}:2", "--dev", str(cache), "--out", str(root / "run"), "--model", str(bundle)]
    settings = ["--steps", "12", "--batch", "4", "--lr", "3e-3", "--warmup", "2", "--eval-every", "6", "--rank", "4"]
    settings += ["--layers", *ADAPTED]  # every layer an adapter may change: the test covers them all
    decoder_adapter.run(["train", *args, *settings])
    decoder_adapter.run(["export", "--adapter", str(root / "run" / "last.pt"), "--model", str(bundle)])
    return {"root": root, "cache": cache, "run": root / "run", "bundle": bundle}


def _strip_adapter(bundle: Path) -> None:
    """Make ``bundle`` the pretrained decoder's (whatever the shipped one holds)."""
    weights = {k: v for k, v in load_file(str(bundle / WEIGHTS_FILE)).items() if not k.startswith(PREFIX)}
    save_file(weights, str(bundle / WEIGHTS_FILE))
    config = json.loads((bundle / CONFIG_FILE).read_text())
    config["model"]["decoder_adapter_rank"] = 0
    (bundle / CONFIG_FILE).write_text(json.dumps(config))


def test_whisper_style_targets() -> None:
    assert whisper_style("i think i can") == "I think I can."
    assert whisper_style("  its name  is say ") == "Its name is say."
    assert whisper_style("Printing, then, for our purpose") == "Printing, then, for our purpose"


def test_cache_holds_the_windows_and_leaves_out_evaluation_sentences(recipe: dict[str, Path]) -> None:
    states = np.load(recipe["cache"] / "states.npy", mmap_mode="r")
    targets = json.loads((recipe["cache"] / "targets.json").read_text())["targets"]
    assert states.shape == (4, 1500, 384) and states.dtype == np.float16
    assert sorted(t["target"] for t in targets) == sorted(whisper_style(t) for t in TEXTS)
    kept = json.loads((recipe["root"] / "cache" / "kept" / "targets.json").read_text())["targets"]
    assert sorted(t["text"] for t in kept) == ["a cat", "hi there", "yes no"]  # "go" is a held-out sentence


def test_training_lowers_the_loss_and_resumes(recipe: dict[str, Path]) -> None:
    saved = torch.load(recipe["run"] / "last.pt", weights_only=False)
    losses = [entry["dev"]["tiny"] for entry in saved["history"]]
    assert saved["step"] == 12 and len(losses) == 3
    assert losses[-1] < 0.7 * losses[0]
    args = ["--train", str(recipe["cache"]), "--dev", str(recipe["cache"]), "--out", str(recipe["run"])]
    decoder_adapter.run(["train", *args, "--model", str(recipe["bundle"]), "--steps", "14", "--batch", "4",
                         "--rank", "4", "--eval-every", "2", "--resume"])  # fmt: skip
    resumed = torch.load(recipe["run"] / "last.pt", weights_only=False)
    assert resumed["step"] == 14 and [e["step"] for e in resumed["history"]] == [0, 6, 12, 14]


def test_the_exported_adapter_is_merged_into_the_decoder(recipe: dict[str, Path]) -> None:
    bundle = load_bundle(recipe["bundle"])
    network = bundle.config.model
    assert isinstance(network, WhisperCTCConfig) and network.decoder_adapter_rank == 4
    assert bundle.second_pass is not None
    _, base = load_base(base_file(network.base))
    adapter = bundle.second_pass.adapter
    assert set(adapter) == set(adapter_shapes(network, base)) and len(adapter) == 2 * 4 * len(ADAPTED)
    assert network.decoder_adapter_layers == list(ADAPTED)  # as trained
    name = "blocks.2.cross_attn.key_value"
    merged = base[f"decoder.{name}.weight"] + adapter[f"{PREFIX}{name}.up"] @ adapter[f"{PREFIX}{name}.down"]
    served = bundle.second_pass.decoder.state_dict()[f"{name}.weight"].numpy()
    np.testing.assert_allclose(served, merged, atol=1e-6)
    assert np.abs(served - base[f"decoder.{name}.weight"]).max() > 1e-4  # training moved it
    assert not np.shares_memory(adapted(base, adapter)[f"decoder.{name}.weight"], base[f"decoder.{name}.weight"])


def test_both_runtimes_serve_the_same_adapted_text(recipe: dict[str, Path]) -> None:
    bundle = load_bundle(recipe["bundle"])
    assert bundle.second_pass is not None
    config, network, trained = load_whisper_bundle(recipe["bundle"])
    slim = SlimSecondPass.from_base(network, 2, "fp32", trained)
    frontend = WhisperLogMel(config.frontend)  # type: ignore[arg-type]
    for wave, _ in cv100_clips(2):
        features, lengths = frontend(torch.from_numpy(wave)[None], torch.tensor([wave.size]))
        reference = bundle.second_pass.transcribe(features, lengths)
        assert reference[0] and slim.transcribe(features.numpy(), lengths.numpy()) == reference


def test_an_adapter_trained_on_own_length_states_is_served_on_them(recipe: dict[str, Path], tmp_path: Path) -> None:
    own = recipe["root"] / "cache" / "own"
    manifest = str(recipe["root"] / "tiny.jsonl")
    cache = ["cache", "--manifest", manifest, "--out", str(own), "--model", str(recipe["bundle"])]
    decoder_adapter.run([*cache, "--states", "own_length"])
    states = np.load(own / "states.npy", mmap_mode="r")
    targets = json.loads((own / "targets.json").read_text())["targets"]
    samples = {text: sf.info(recipe["root"] / f"{i}.wav").frames for i, text in enumerate(TEXTS)}
    frames = [-(-(samples[t["text"]] // 160) // 2) for t in targets]  # each clip's own: 50 per second
    assert [t["frames"] for t in targets] == frames
    assert [t["start"] for t in targets] == np.cumsum([0, *frames[:-1]]).tolist()
    assert states.shape == (sum(frames), 384)
    bundle = tmp_path / "bundle"
    shutil.copytree(recipe["bundle"], bundle)
    train = ["train", "--model", str(bundle), "--steps", "4", "--batch", "4", "--rank", "4", "--eval-every", "4"]
    with pytest.raises(SystemExit, match="different kinds"):
        decoder_adapter.run([*train, "--train", str(own), "--dev", str(recipe["cache"]), "--out", str(tmp_path / "x")])
    decoder_adapter.run([*train, "--train", str(own), "--dev", str(own), "--out", str(tmp_path / "run")])
    assert load_bundle(bundle).config.model.second_pass_states == "window"  # type: ignore[union-attr]
    decoder_adapter.run(["export", "--adapter", str(tmp_path / "run" / "adapter_4.pt"), "--model", str(bundle)])
    served = load_bundle(bundle)
    assert served.config.model.second_pass_states == "own_length"  # type: ignore[union-attr]
    assert served.second_pass is not None and served.second_pass.own_length


def test_a_bundle_whose_adapter_does_not_fit_is_refused(recipe: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "bundle"
    shutil.copytree(recipe["bundle"], broken)
    config = json.loads((broken / CONFIG_FILE).read_text())
    config["model"]["decoder_adapter_rank"] = 8
    (broken / CONFIG_FILE).write_text(json.dumps(config))
    with pytest.raises(BundleError, match="decoder_adapter.blocks"):
        load_bundle(broken)
    with pytest.raises(BundleError, match="decoder_adapter.blocks"):
        load_whisper_bundle(broken)
    _strip_adapter(broken)
    assert load_bundle(broken).second_pass.adapter == {}  # type: ignore[union-attr]
