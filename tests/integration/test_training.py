"""End-to-end training recipe on a handful of synthetic utterances: train, export, load, fine-tune."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from app.asr.bundle import load_bundle
from app.asr.numbers import number_to_words, ordinal_to_words, year_to_words
from train import average, export, grow, train
from train.data.audio_io import read_audio, write_flac, write_manifest
from train.data.augment import AugmentConfig, augment_waveform
from train.data.dataset import BucketBatchSampler

SENTENCES = [
    "turn on the lights",
    "the number is forty two",
    "call john smith",
    "open the window please",
    "it is raining today",
    "see you on monday",
    "my name is alice",
    "the code is one two three",
]


@pytest.fixture(scope="module")
def manifest(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Eight espeak-ng utterances at 16 kHz with a JSONL manifest."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (scripts/install-tts.sh installs it)")
    folder = tmp_path_factory.mktemp("speech")
    rows = []
    for i, text in enumerate(SENTENCES):
        wav = folder / f"{i}.wav"
        subprocess.run(["espeak-ng", "-v", "en-us", "-s", "160", "-w", str(wav), text], check=True)
        flac = folder / f"{i}.flac"
        audio = read_audio(wav)
        write_flac(flac, audio)
        rows.append({"audio": flac.name, "text": text, "duration": audio.size / 16000, "source": "espeak:en-us"})
    write_manifest(folder / "tiny.jsonl", rows)
    return folder / "tiny.jsonl"


def tiny_args(manifest: Path, out: Path, steps: int) -> list[str]:
    """A few CPU steps on the tiny set: no augmentation, one thread, dev evaluation only at the end."""
    options = {
        "--train": manifest, "--dev": manifest, "--out": out, "--max-steps": steps, "--batch-seconds": 12,
        "--workers": 0, "--threads": 1, "--lr": 3e-3, "--warmup-steps": 5, "--log-steps": 5,
        "--stats-utterances": 8, "--eval-minutes": 60, "--device": "cpu", "--seed": 1,
    }  # fmt: skip
    return [*(str(x) for item in options.items() for x in item), "--no-augment"]


@pytest.fixture(scope="module")
def trained_run(manifest: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("run")
    train.run(tiny_args(manifest, out, steps=30))
    return out


def test_loss_decreases(trained_run: Path) -> None:
    entries = [json.loads(line) for line in (trained_run / "log.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in entries if e["kind"] == "train"]
    assert len(losses) >= 4
    assert losses[-1] < 0.7 * losses[0], losses
    assert (trained_run / "best.pt").exists() and (trained_run / "last.pt").exists()


def test_export_loads_in_server_format(trained_run: Path, tmp_path: Path) -> None:
    bundle_dir = export.run(
        [
            "--checkpoint",
            str(trained_run / "best.pt"),
            "--out",
            str(tmp_path / "tiny"),
            "--log",
            str(trained_run / "log.jsonl"),
        ]
    )
    bundle = load_bundle(bundle_dir)
    assert bundle.config.trained
    assert bundle.config.frontend.normalization == "global"
    assert (bundle_dir / "convergence.png").stat().st_size > 0
    assert "Parameters" in (bundle_dir / "README.md").read_text()
    wave = torch.randn(1, 16000) * 0.1
    feats, lengths = bundle.frontend(wave, torch.tensor([16000]))
    log_probs, _ = bundle.model(feats, lengths)
    assert log_probs.shape[-1] == len(bundle.config.tokens)


def test_resume_continues_from_checkpoint(manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train.run(tiny_args(manifest, out, steps=6))
    state = train.run(["--resume", "--out", str(out), "--max-steps", "10", "--workers", "0"])
    assert state.step == 10


def test_finetune_from_bundle_changes_weights(manifest: Path, trained_run: Path, tmp_path: Path) -> None:
    base = export.run(["--checkpoint", str(trained_run / "best.pt"), "--out", str(tmp_path / "base")])
    out = tmp_path / "finetune"
    args = tiny_args(manifest, out, steps=3)
    train.run([*args, "--init", str(base), "--name", "tiny-ft"])
    tuned = export.run(["--checkpoint", str(out / "last.pt"), "--out", str(tmp_path / "tuned")])
    before, after = load_bundle(base).model.state_dict(), load_bundle(tuned).model.state_dict()
    assert load_bundle(tuned).config.name == "tiny-ft"
    assert load_bundle(tuned).config.frontend == load_bundle(base).config.frontend
    changed = [k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])]
    assert len(changed) > len(before) // 2


def test_finetune_at_a_smaller_stride_keeps_the_weights_shapes(
    manifest: Path, trained_run: Path, tmp_path: Path
) -> None:
    base = export.run(["--checkpoint", str(trained_run / "best.pt"), "--out", str(tmp_path / "base")])
    out = tmp_path / "restride"
    train.run([*tiny_args(manifest, out, steps=2), "--init", str(base), "--stride", "2"])
    logs = [str(trained_run / "log.jsonl"), str(out / "log.jsonl")]
    exported = export.run(["--checkpoint", str(out / "last.pt"), "--out", str(tmp_path / "tuned"), "--log", *logs])
    assert "in 2 runs, each from the one before's weights" in (exported / "README.md").read_text()
    assert (exported / "convergence.png").stat().st_size > 0
    tuned, original = load_bundle(exported), load_bundle(base)
    assert original.config.model.stride == 4 and tuned.config.model.stride == 2
    assert tuned.config.frame_rate == 2 * original.config.frame_rate
    wave = torch.randn(1, 16000) * 0.1
    feats, lengths = tuned.frontend(wave, torch.tensor([16000]))
    log_probs, out_lengths = tuned.model(feats, lengths)
    assert int(out_lengths[0]) == log_probs.shape[1] == (int(lengths[0]) + 1) // 2


def test_finetune_to_word_pieces_keeps_the_encoder_and_sizes_a_new_output_layer(
    manifest: Path, trained_run: Path, tmp_path: Path
) -> None:
    base = export.run(["--checkpoint", str(trained_run / "best.pt"), "--out", str(tmp_path / "base")])
    out = tmp_path / "pieces"
    train.run([*tiny_args(manifest, out, steps=2), "--init", str(base), "--vocab", "40", "--lr", "1e-9"])
    tuned = load_bundle(export.run(["--checkpoint", str(out / "last.pt"), "--out", str(tmp_path / "tuned")]))
    original = load_bundle(base)
    tokens = tuned.config.tokens
    assert len(tokens) == 40 and tokens[:29] == original.config.tokens and "the" in tokens
    assert "a-z and 11 word pieces learned from the training text" in (tmp_path / "tuned" / "README.md").read_text()
    weights, before = dict(tuned.model.named_parameters()), dict(original.model.named_parameters())
    assert weights["head.weight"].shape[0] == 40
    encoder = [k for k in before if not k.startswith("head.")]
    assert all(torch.allclose(weights[k], before[k], atol=1e-6) for k in encoder)  # lr 1e-9: copied, unchanged
    wave = torch.randn(1, 16000) * 0.1
    log_probs, _ = tuned.model(*tuned.frontend(wave, torch.tensor([16000])))
    assert log_probs.shape[-1] == 40
    with pytest.raises(SystemExit, match="smallest vocabulary"):
        train.run([*tiny_args(manifest, tmp_path / "small", steps=1), "--vocab", "20"])


def test_grown_model_computes_the_same_until_fine_tuned(manifest: Path, trained_run: Path, tmp_path: Path) -> None:
    base = export.run(["--checkpoint", str(trained_run / "best.pt"), "--out", str(tmp_path / "base")])
    grown_dir = tmp_path / "grown"
    grow.main(["--model", str(base), "--after", "1", "3", "--manifest", str(manifest), "--out", str(grown_dir)])
    original, grown = load_bundle(base), load_bundle(grown_dir)
    blocks = original.config.model.blocks
    copies = [blocks[i].model_copy(update={"stride": 1}) for i in (1, 3)]
    assert grown.config.model.blocks == [*blocks[:2], copies[0], *blocks[2:4], copies[1], *blocks[4:]]
    assert grown.num_parameters() > original.num_parameters()
    noise = np.random.default_rng(0).normal(0, 0.1, 9000)
    waves = [read_audio(manifest.parent / "0.flac"), read_audio(manifest.parent / "5.flac"), noise]
    for wave in waves:
        audio = torch.from_numpy(wave.astype(np.float32))[None]
        with torch.inference_mode():
            before, _ = original.model(*original.frontend(audio, torch.tensor([audio.shape[1]])))
            after, _ = grown.model(*grown.frontend(audio, torch.tensor([audio.shape[1]])))
        assert torch.allclose(before, after, atol=1e-4)
    out = tmp_path / "deep"
    train.run([*tiny_args(manifest, out, steps=3), "--init", str(grown_dir)])
    tuned = load_bundle(export.run(["--checkpoint", str(out / "last.pt"), "--out", str(tmp_path / "tuned")]))
    new_block = dict(tuned.model.named_parameters())["blocks.2.layers.2.norm.weight"]
    assert new_block.abs().sum() > 0  # the new block's zero-initialised output began to learn
    with pytest.raises(ValueError, match="no block"):
        grow.deeper_config(original.config, [len(blocks)])


def test_kept_checkpoints_average_into_an_exportable_model(manifest: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    train.run([*tiny_args(manifest, out, steps=6), "--checkpoint-minutes", "0", "--keep-checkpoints", "3"])
    kept = sorted((out / "checkpoints").glob("step-*.pt"))
    steps = [train.load_checkpoint(p)["state"]["step"] for p in kept]
    assert steps == [4, 5, 6]  # the three latest; older ones deleted
    average.main([*(str(p) for p in kept), "--last", "2", "--out", str(out / "averaged.pt")])
    averaged = train.load_checkpoint(out / "averaged.pt")
    assert averaged["averaged_steps"] == [5, 6]
    five, six = (train.load_checkpoint(p)["model"] for p in kept[1:])
    name = next(k for k in six if k.endswith("pointwise.weight"))
    assert not torch.equal(five[name], six[name])
    assert torch.allclose(averaged["model"][name], (five[name] + six[name]) / 2, atol=1e-6)
    bundle = load_bundle(export.run(["--checkpoint", str(out / "averaged.pt"), "--out", str(tmp_path / "avg")]))
    assert torch.allclose(bundle.model.state_dict()[name], averaged["model"][name])


def test_checkpoints_of_different_architectures_are_not_averaged() -> None:
    def checkpoint(step: int, channels: int) -> dict:
        return {"state": {"step": step}, "bundle_config": {"model": {"channels": channels}}, "model": {}}

    with pytest.raises(ValueError, match="different architectures"):
        average.average_checkpoints([checkpoint(1, 192), checkpoint(2, 256)])
    with pytest.raises(ValueError, match="no checkpoints"):
        average.average_checkpoints([])
    pieces = [checkpoint(1, 192), checkpoint(2, 192)]
    pieces[0]["bundle_config"]["tokens"], pieces[1]["bundle_config"]["tokens"] = (
        ["<blank>", " ", "ab"],
        ["<blank>", " ", "cd"],
    )
    with pytest.raises(ValueError, match="different token lists"):
        average.average_checkpoints(pieces)


def test_numbers_are_spelled_in_vocabulary_words() -> None:
    assert number_to_words(1042) == "one thousand and forty two"
    assert ordinal_to_words(21) == "twenty first"
    assert year_to_words(1987) == "nineteen eighty seven"
    assert year_to_words(2005) == "two thousand and five"


def test_first_epoch_is_a_curriculum_of_short_utterances() -> None:
    seconds = [float(s) for s in (5, 1, 3, 2, 4, 6, 1.5, 2.5)]
    sampler = BucketBatchSampler(seconds, [1] * len(seconds), batch_seconds=6.0, seed=0)
    first = [seconds[i] for batch in sampler.batches(0) for i in batch]
    assert first == sorted(first)
    later = sorted(i for batch in sampler.batches(1) for i in batch)
    assert later == list(range(len(seconds)))


def test_waveform_augmentation_keeps_audio_usable() -> None:
    rng = random.Random(0)
    audio = (np.sin(np.arange(16000) / 8.0) * 0.3).astype(np.float32)
    always = AugmentConfig(p_speed=1, p_gain=1, p_noise=1, p_babble=1, p_reverb=1, p_telephone=0, p_codec=1)
    for _ in range(5):
        out = augment_waveform(audio, always, rng, babble=lambda: audio[::-1].copy())
        assert out.dtype == np.float32 and 0.85 * audio.size < out.size < 1.15 * audio.size
        assert np.isfinite(out).all() and np.abs(out).max() <= 1.0


def test_learning_rate_warms_up_decays_and_anneals_to_zero_at_the_budget() -> None:
    cfg = train.TrainConfig(lr=1e-3, warmup_steps=100, max_hours=2.0, decay_hours=0.5)
    assert train.lr_at(50, cfg) == pytest.approx(5e-4)
    assert train.lr_at(400, cfg, hours=1.0) == pytest.approx(5e-4)  # sqrt(100 / 400), before the decay
    assert train.lr_at(400, cfg, hours=1.75) == pytest.approx(2.5e-4)  # half-way through the decay
    assert train.lr_at(400, cfg, hours=2.0) == 0.0
    assert train.lr_at(400, train.TrainConfig(lr=1e-3, warmup_steps=100), hours=5.0) == pytest.approx(5e-4)
