"""Fine-tuning the shipped bundle on your own audio (``asr-finetune``): its manifests cached, its head
and blocks trained from where the bundle left them, the export keeping the bundle's decoder adapter,
second-pass settings and language model, and every decoder served from the result."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load_file

from app.asr.bundle_files import LM_FOLDER, WEIGHTS_FILE, read_bundle_files
from app.asr.whisper.adapter import PREFIX
from app.config import DEFAULT_MODEL_PATH, Settings
from app.main import create_app
from tests.conftest import wait_ready
from tests.support import spoken_manifest
from train import whisper_finetune
from train.checkpoint import load_checkpoint

TRAIN = [
    "the zorblax is on the table",
    "please give me the zorblax",
    "where did you put the zorblax",
    "my zorblax is red",
]
DEV = ["can you find the zorblax", "this zorblax is very old"]

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="espeak-ng missing: run scripts/install-tts.sh"
)


@pytest.fixture(scope="module")
def finetuned(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """20 steps of fine-tuning the shipped bundle on four utterances, chosen by two others."""
    root = tmp_path_factory.mktemp("finetune")
    train, dev = spoken_manifest(root, "mine", TRAIN), spoken_manifest(root, "mine_dev", DEV)
    options = {
        "--train": f"{train}:3", "--dev": dev, "--out": root / "my-model", "--run": root / "run",
        "--cache-root": root / "cache", "--max-steps": 20, "--lr-head": 3e-3, "--lr-blocks": 5e-4,
        "--warmup-steps": 3, "--eval-minutes": 60, "--threads": 1,
    }  # fmt: skip
    summary = whisper_finetune.run([str(x) for item in options.items() for x in item])
    return {"root": root, "summary": summary, "out": root / "my-model", "run": root / "run"}


def test_the_run_starts_from_the_bundle_and_exports_its_best_checkpoint(finetuned: dict) -> None:
    run = finetuned["run"]
    entries = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    dev = [e for e in entries if e["kind"] == "dev"]
    assert [e["step"] for e in dev] == [0, 20]  # the bundle's own WER first, then the end's
    summary = finetuned["summary"]
    assert summary["steps"] == 20 and summary["bundle"] == str(finetuned["out"])
    assert summary["dev_wer_before"]["mean"] == dev[0]["wer"]["mean"]
    assert summary["dev_wer_best"]["mean"] == min(e["wer"]["mean"] for e in dev)
    assert json.loads((run / "finetune.json").read_text())["dev_wer_before"] == summary["dev_wer_before"]
    folders = sorted(p.name for p in (finetuned["root"] / "cache").iterdir())
    assert [f.rsplit("-", 1)[0] for f in folders] == ["mine", "mine_dev"]  # and a digest of the manifest's path

    base = load_file(str(DEFAULT_MODEL_PATH / WEIGHTS_FILE))
    last = load_checkpoint(run / "last.pt")["model"]
    assert not torch.allclose(last["head.weight"].float(), base["head.weight"].float(), atol=1e-3)  # it trained
    best = load_checkpoint(run / "best.pt")["model"]
    exported = load_file(str(finetuned["out"] / WEIGHTS_FILE))
    assert set(exported) == set(best) | {k for k in base if k.startswith(PREFIX)}
    for name, tensor in best.items():
        assert torch.equal(exported[name], tensor.to(torch.float16)), name


def test_the_export_keeps_the_bundles_second_pass_and_language_model(finetuned: dict) -> None:
    base_config, base = read_bundle_files(DEFAULT_MODEL_PATH)
    config, stored = read_bundle_files(finetuned["out"])
    assert config.name == "my-model" and config.trained
    kept = ("base", "tuned_layers", "ctc_weight", "ctc_beams", "decoder_adapter_rank", "decoder_adapter_layers")
    for field in (*kept, "second_pass_states"):
        assert getattr(config.model, field) == getattr(base_config.model, field), field
    adapter = [k for k in base if k.startswith(PREFIX)]
    assert adapter and all((stored[k] == base[k]).all() for k in adapter)
    lm = sorted(p.name for p in (DEFAULT_MODEL_PATH / LM_FOLDER).iterdir())
    assert sorted(p.name for p in (finetuned["out"] / LM_FOLDER).iterdir()) == lm
    for name in lm:
        assert (finetuned["out"] / LM_FOLDER / name).read_bytes() == (
            DEFAULT_MODEL_PATH / LM_FOLDER / name
        ).read_bytes()
    assert "## Kept from en-whisper-tiny" in (finetuned["out"] / "README.md").read_text()


def test_the_finetuned_bundle_serves_every_decoder(finetuned: dict) -> None:
    wav = (finetuned["root"] / "mine_dev0.wav").read_bytes()
    with TestClient(create_app(Settings(model_path=finetuned["out"]))) as client:
        wait_ready(client, timeout_s=120)
        assert client.get("/v1/models").json()["data"][0]["id"] == "my-model"
        for decoder in ("attention", "beam", "greedy"):
            response = client.post(
                "/transcribe", params={"decoder": decoder}, files={"file": ("a.wav", wav, "audio/wav")}
            )
            assert response.status_code == 200, response.text
            assert response.json()["text"].split(), decoder


def test_bad_arguments_are_refused_before_any_work_and_each_manifest_file_caches_apart(tmp_path: Path) -> None:
    train = spoken_manifest(tmp_path, "mine", TRAIN[:1])
    (tmp_path / "other").mkdir()
    twin = tmp_path / "other" / "mine.jsonl"
    twin.write_text(train.read_text())
    base = ["--out", str(tmp_path / "m"), "--cache-root", str(tmp_path / "cache")]
    with pytest.raises(SystemExit, match="not a Whisper CTC bundle"):
        whisper_finetune.run(
            [*base, "--train", str(train), "--dev", str(train), "--base", str(DEFAULT_MODEL_PATH.parent / "en-small")]
        )
    with pytest.raises(SystemExit, match="no such folder"):
        whisper_finetune.run([*base, "--train", str(train), "--dev", str(train), "--base", str(tmp_path / "nope")])
    with pytest.raises(SystemExit, match="no such manifest"):
        whisper_finetune.run([*base, "--train", str(train), "--dev", str(tmp_path / "nope.jsonl")])
    names = whisper_finetune.set_names([f"{train}:3", str(train), str(twin)])  # one folder per manifest file
    assert len(names) == 2 and len(set(names.values())) == 2
    assert all(name.startswith("mine-") for name in names.values())
    with pytest.raises(SystemExit, match="needs --train and --dev"):
        whisper_finetune.run([*base, "--train", str(train)])
    assert not (tmp_path / "cache").exists()


def test_head_only_leaves_the_encoder_blocks_as_the_bundle_has_them(finetuned: dict, tmp_path: Path) -> None:
    root = finetuned["root"]
    options = {
        "--train": root / "mine.jsonl", "--dev": root / "mine_dev.jsonl", "--out": tmp_path / "head-model",
        "--run": tmp_path / "run", "--cache-root": root / "cache", "--max-steps": 4, "--lr-head": 3e-3,
        "--warmup-steps": 1, "--eval-minutes": 60, "--threads": 1,
    }  # fmt: skip
    whisper_finetune.run([*(str(x) for item in options.items() for x in item), "--head-only"])
    base = load_file(str(DEFAULT_MODEL_PATH / WEIGHTS_FILE))
    last = load_checkpoint(tmp_path / "run" / "last.pt")["model"]
    blocks = [k for k in base if k.startswith("encoder.blocks.")]
    assert blocks and all(torch.equal(last[k].to(torch.float16), base[k]) for k in blocks)
    assert not torch.allclose(last["head.weight"].float(), base["head.weight"].float(), atol=1e-4)
