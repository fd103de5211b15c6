"""The second pass's tuning step: each setting decodes as the served recognizer does, and the chosen
setting lands in the bundle's config."""

from __future__ import annotations

import shutil
from pathlib import Path

from app.asr.bundle_files import read_config
from app.asr.configs import WhisperCTCConfig
from app.asr.slim.recognizer import SlimRecognizer
from tests.support import cv100_clips
from train.tune_second_pass import decode_settings, write_setting

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "models" / "en-whisper-tiny"


def test_each_setting_decodes_as_the_recognizer_does() -> None:
    clips = [audio for audio, _ in cv100_clips(2)]
    recognizer = SlimRecognizer.load(DEFAULT, num_threads=2)
    network = recognizer.config.model
    assert isinstance(network, WhisperCTCConfig)
    shipped = (network.ctc_weight, network.ctc_beams)
    for clip, served in zip(clips, recognizer.second_pass(clips), strict=True):
        greedy, tuned = decode_settings(recognizer, clip, [(0.0, 1), shipped])
        assert tuned == served.text
        assert greedy == recognizer.passes.transcribe(*recognizer._features([clip]))[0]  # no CTC log-probs


def test_the_best_setting_is_written_to_the_bundle(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(DEFAULT, bundle, ignore=shutil.ignore_patterns("*.safetensors", "lm", "*.png"))
    write_setting(bundle, (0.15, 3))
    network = read_config(bundle).model
    assert isinstance(network, WhisperCTCConfig)
    assert (network.ctc_weight, network.ctc_beams) == (0.15, 3)
    assert read_config(bundle).model_dump(exclude={"model"}) == read_config(DEFAULT).model_dump(exclude={"model"})


def test_the_server_setting_overrides_the_bundles_beam_count() -> None:
    from app.asr.recognizer import open_recognizer
    from train.tune_second_pass import decode_settings

    clip = cv100_clips(1)[0][0]
    slim = open_recognizer(DEFAULT, "onnx", second_pass_beams=1, second_pass_precision="fp32")  # as PyTorch
    torch_path = open_recognizer(DEFAULT, "torch", second_pass_beams=1)
    assert isinstance(slim, SlimRecognizer) and slim.passes.joint is not None
    network = slim.config.model
    assert isinstance(network, WhisperCTCConfig) and network.ctc_beams != 1  # the bundle's own count differs
    assert slim.passes.joint.beams == 1
    expected = decode_settings(slim, clip, [(network.ctc_weight, 1)])[0]
    assert slim.second_pass([clip])[0].text == torch_path.second_pass([clip])[0].text == expected
