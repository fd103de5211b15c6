"""The Whisper-encoder CTC recipe end to end on four tiny synthetic utterances: cache, train, export, load."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import load_file

from app.asr.bundle import WEIGHTS_FILE, build_model, load_bundle
from app.asr.configs import whisper_ctc_config
from train import whisper_head

TEXTS = ["go", "yes no", "a cat", "hi there"]
RATE = 16000


def chirps(text: str, seed: int) -> np.ndarray:
    """0.3 s of silence, then one 0.12 s tone per character (pitch by letter), then silence: float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(0.12 * RATE)) / RATE
    pieces = [np.zeros(int(0.3 * RATE))]
    for ch in text:
        freq = 150.0 + 40.0 * (ord(ch) - ord("a")) if ch != " " else 0.0
        pieces.append(0.3 * np.sin(2 * np.pi * freq * t) * np.hanning(t.size))
    pieces.append(np.zeros(int(0.3 * RATE)))
    wave = np.concatenate(pieces)
    return (wave + 0.003 * rng.standard_normal(wave.size)).astype(np.float32)


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A manifest, its cache, a 40-step training run and the exported bundle, all in a tmp folder."""
    root = tmp_path_factory.mktemp("whisper-head")
    rows = []
    for i, text in enumerate(TEXTS):
        sf.write(root / f"{i}.wav", chirps(text, i), RATE)
        rows.append(json.dumps({"audio": f"{i}.wav", "text": text.upper(), "id": f"u{i}"}))
    (root / "tiny.jsonl").write_text("\n".join(rows) + "\n")
    cache = root / "cache"
    cache_args = ["cache", "--sets", f"tiny={root / 'tiny.jsonl'}", "--root", str(cache), "--threads", "1"]
    whisper_head.run([*cache_args, "--shard-utts", "3"])
    run_dir = root / "run"
    options = {
        "--train": "tiny:2", "--dev": "tiny", "--cache-root": cache, "--out": run_dir, "--max-steps": 40,
        "--threads": 1, "--batch-frames": 2000, "--lr-head": 5e-3, "--lr-blocks": 1e-3, "--warmup-steps": 5,
        "--log-steps": 5, "--eval-minutes": 60, "--seed": 1, "--name": "tiny-whisper",
    }  # fmt: skip
    whisper_head.run(["train", *(str(x) for item in options.items() for x in item), "--no-augment"])
    export = [
        "export",
        "--checkpoint",
        str(run_dir / "best.pt"),
        "--out",
        str(root / "bundle"),
        "--cache-root",
        str(cache),
    ]
    bundle = whisper_head.run(export)
    return {"root": root, "cache": cache, "run": run_dir, "bundle": bundle, "cache_args": cache_args}  # type: ignore[dict-item]


def test_cache_is_sharded_resumable_and_exact(recipe: dict) -> None:
    folder = recipe["cache"] / "tiny"
    shards = sorted(folder.glob("shard-*.pt"))
    meta = json.loads((folder / "meta.json").read_text())
    assert [s.name for s in shards] == ["shard-00000.pt", "shard-00001.pt"]
    assert meta["utterances"] == 4 and meta["frozen_blocks"] == 3
    stamps = [s.stat().st_mtime_ns for s in shards]
    whisper_head.run([*recipe["cache_args"], "--shard-utts", "3"])
    assert [s.stat().st_mtime_ns for s in shards] == stamps  # nothing recomputed
    with pytest.raises(SystemExit, match="other settings"):
        whisper_head.run([*recipe["cache_args"], "--shard-utts", "2"])

    frontend, model = build_model(whisper_ctc_config(tuned_layers=[3]))
    model.eval()
    shard = torch.load(shards[0], weights_only=True)
    assert shard["states"].dtype == torch.float16 and shard["texts"][0] == "go"
    states = shard["states"].split(shard["lengths"].tolist())
    for i in range(3):  # cached states + the tuned half == the whole network, per utterance
        wave = torch.from_numpy(chirps(TEXTS[i], i))[None]
        with torch.no_grad():
            feats, lengths = frontend(wave, torch.tensor([wave.shape[1]]))
            encoded, _ = model.encoder(feats, lengths)  # (1, frames, d_model), after ln_post
            resumed = model.encoder.ln_post(model.encoder.blocks[3](states[i][None].float(), None))
            full, _ = model(feats, lengths)
            halves = whisper_head.encode_tuned(model, states[i][None].float(), shard["lengths"][i : i + 1])
        assert encoded.shape == resumed.shape and full.shape == halves.shape
        assert (encoded - resumed).abs().max() < 0.02 * encoded.abs().max()  # fp16 storage
        assert torch.allclose(full, halves, atol=2e-2), (full - halves).abs().max()


def test_a_speed_perturbed_copy_is_cached_as_its_own_set(recipe: dict) -> None:
    """``--speed 0.9`` caches every utterance played 0.9x as fast: 1/0.9 of the audio and frames;
    the folder remembers the speed and refuses another one, and speed 1 leaves the meta as before."""
    root = recipe["cache"]
    manifest = recipe["root"] / "tiny.jsonl"
    slow = ["cache", "--sets", f"tiny_sp09={manifest}", "--root", str(root), "--threads", "1", "--shard-utts", "3"]
    whisper_head.run([*slow, "--speed", "0.9"])
    plain = json.loads((root / "tiny" / "meta.json").read_text())
    perturbed = json.loads((root / "tiny_sp09" / "meta.json").read_text())
    assert "speed" not in plain and perturbed["speed"] == 0.9
    seconds = [sum(shard["seconds"] for shard in meta["shards"].values()) for meta in (plain, perturbed)]
    assert seconds[1] == pytest.approx(seconds[0] / 0.9, rel=0.01)
    frames = [
        torch.load(sorted((root / name).glob("shard-*.pt"))[0], weights_only=True)["lengths"]
        for name in ("tiny", "tiny_sp09")
    ]
    assert all(b > a for a, b in zip(frames[0].tolist(), frames[1].tolist(), strict=True))
    with pytest.raises(SystemExit, match="other settings"):
        whisper_head.run([*slow, "--speed", "1.1"])
    with pytest.raises(SystemExit, match="other settings"):
        whisper_head.run(slow)


def cached_states(manifest: Path, name: str, root: Path, *flags: str) -> list[torch.Tensor]:
    """Cache ``manifest`` as set ``name`` under ``root`` with ``flags``; its first shard's states, one per utterance."""
    args = ["cache", "--sets", f"{name}={manifest}", "--root", str(root), "--threads", "1", "--shard-utts", "4"]
    whisper_head.run([*args, *flags])
    shard = torch.load(root / name / "shard-00000.pt", weights_only=True)
    return list(shard["states"].float().split(shard["lengths"].tolist()))


def test_a_copy_in_rooms_is_cached_as_its_own_set_and_repeatable(recipe: dict, tmp_path: Path) -> None:
    """``--augment 1 --seed S`` caches every utterance through its own noise, talkers, room and
    channel: the same length as the clean set, other states, the same states again for the same
    seed, others for another seed; the folder refuses another strength."""
    cache = functools.partial(cached_states, recipe["root"] / "tiny.jsonl")
    clean = cache("tiny", tmp_path / "clean")
    rooms = cache("tiny_rooms1", tmp_path, "--augment", "1", "--seed", "1")
    again = cache("tiny_rooms1", tmp_path / "again", "--augment", "1", "--seed", "1")
    other = cache("tiny_rooms2", tmp_path, "--augment", "1", "--seed", "2")
    meta = json.loads((tmp_path / "tiny_rooms1" / "meta.json").read_text())
    assert meta["augment"] == 1.0 and meta["seed"] == 1
    assert [s.shape for s in rooms] == [s.shape for s in clean]
    assert all(torch.equal(a, b) for a, b in zip(rooms, again, strict=True))
    assert sum(not torch.allclose(a, b, atol=1e-3) for a, b in zip(rooms, clean, strict=True)) >= 3
    assert sum(not torch.allclose(a, b, atol=1e-3) for a, b in zip(rooms, other, strict=True)) >= 3
    with pytest.raises(SystemExit, match="other settings"):
        cache("tiny_rooms1", tmp_path, "--augment", "0.5", "--seed", "1")
    with pytest.raises(SystemExit, match="from 0 to 1"):
        cache("tiny_rooms3", tmp_path, "--augment", "2", "--seed", "1")


def test_a_copy_with_warped_vocal_tracts_is_cached_as_its_own_set_and_repeatable(recipe: dict, tmp_path: Path) -> None:
    """``--warp W --seed S`` caches every utterance through mel filters warped by its own factor
    (VTLP): the same lengths as the plain set, other states, the same again for the same seed;
    the folder records the warp and refuses another; a warp of 0.5 or more is refused."""
    cache = functools.partial(cached_states, recipe["root"] / "tiny.jsonl")
    plain = cache("tiny", tmp_path / "plain")
    warped = cache("tiny_vtlp1", tmp_path, "--warp", "0.12", "--seed", "1")
    again = cache("tiny_vtlp1", tmp_path / "again", "--warp", "0.12", "--seed", "1")
    meta = json.loads((tmp_path / "tiny_vtlp1" / "meta.json").read_text())
    assert meta["warp"] == 0.12 and meta["seed"] == 1 and "augment" not in meta
    assert [s.shape for s in warped] == [s.shape for s in plain]
    assert all(torch.equal(a, b) for a, b in zip(warped, again, strict=True))
    assert all(not torch.allclose(a, b, atol=1e-3) for a, b in zip(warped, plain, strict=True))
    with pytest.raises(SystemExit, match="other settings"):
        cache("tiny_vtlp1", tmp_path, "--warp", "0.1", "--seed", "1")
    with pytest.raises(SystemExit, match="from 0 to 0.5"):
        cache("tiny_vtlp2", tmp_path, "--warp", "0.5", "--seed", "1")


def test_loss_falls_and_checkpoints_are_kept(recipe: dict) -> None:
    entries = [json.loads(line) for line in (recipe["run"] / "log.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in entries if e["kind"] == "train"]
    assert len(losses) == 8
    assert losses[-1] < 0.5 * losses[0], losses
    assert [e["kind"] for e in entries][-2:] == ["dev", "end"]
    assert (recipe["run"] / "best.pt").exists() and (recipe["run"] / "last.pt").exists()


def test_export_stores_only_the_trained_weights_and_loads(recipe: dict) -> None:
    bundle = load_bundle(recipe["bundle"])
    assert bundle.config.trained and bundle.config.name == "tiny-whisper"
    assert bundle.config.model.tuned_layers == [3] and "mean" in bundle.config.metrics
    stored = load_file(str(recipe["bundle"] / WEIGHTS_FILE))
    assert stored and all(k.startswith(("head.", "encoder.blocks.3.")) for k in stored)
    assert any(k.startswith("encoder.blocks.3.") for k in stored)
    _, pretrained = build_model(whisper_ctc_config(tuned_layers=[3]))
    fresh = pretrained.state_dict()
    assert not torch.equal(stored["encoder.blocks.3.mlp.0.weight"], fresh["encoder.blocks.3.mlp.0.weight"])
    assert torch.equal(
        bundle.model.state_dict()["encoder.blocks.2.mlp.0.weight"], fresh["encoder.blocks.2.mlp.0.weight"]
    )
    card = (recipe["bundle"] / "README.md").read_text()
    assert "## Accuracy" in card and "2104.01378" in card and whisper_ctc_config().model.base.sha256 in card

    wave = torch.from_numpy(chirps("a cat", 2))[None]
    with torch.no_grad():
        feats, lengths = bundle.frontend(wave, torch.tensor([wave.shape[1]]))
        log_probs, out_lengths = bundle.model(feats, lengths)
    assert log_probs.shape == (1, (wave.shape[1] // 160 + 1) // 2, len(bundle.config.tokens))
    assert int(out_lengths[0]) == log_probs.shape[1]
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(1, log_probs.shape[1]), atol=1e-4)


def test_resume_continues_to_the_step_budget(recipe: dict, tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    args = ["--train", "tiny", "--cache-root", str(recipe["cache"]), "--out", str(run_dir), "--threads", "1"]
    whisper_head.run(["train", *args, "--max-steps", "3", "--head-only"])
    state = whisper_head.run(["train", "--resume", "--out", str(run_dir), "--max-steps", "5"])
    assert state.step == 5
    checkpoint = whisper_head.load_checkpoint(run_dir / "last.pt")
    assert checkpoint["train_config"]["head_only"] and checkpoint["state"]["step"] == 5


def test_states_of_a_bundle_s_encoder_are_refused_for_training(recipe: dict, tmp_path: Path) -> None:
    """A cache written through a bundle's tuned blocks (``cache --encoder-bundle``) is not what the
    recipe's model reads (the pretrained blocks below its tuned ones): ``train`` names the folder
    instead of training a head that the export would pair with the pretrained blocks."""
    cached_states(recipe["root"] / "tiny.jsonl", "tiny", tmp_path, "--encoder-bundle", str(recipe["bundle"]))
    args = ["--train", "tiny", "--dev", "tiny", "--cache-root", str(tmp_path), "--out", str(tmp_path / "run")]
    with pytest.raises(SystemExit, match=r"tiny holds the states of another encoder than the pretrained"):
        whisper_head.run(["train", *args, "--max-steps", "1", "--threads", "1"])
    assert not (tmp_path / "run" / "last.pt").exists()
