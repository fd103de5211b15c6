"""The slim recognizer (NumPy and ONNX Runtime, no PyTorch) equals the PyTorch recognizer of the
shipped default bundle: the same CTC log-probs within float tolerance, the same best paths and
the same second-pass text, on real speech."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.asr.bundle import BundleError, load_bundle
from app.asr.slim.recognizer import SlimRecognizer
from app.asr.torch_recognizer import TorchRecognizer
from tests.support import cv100_clips

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "models" / "en-whisper-tiny"


@pytest.fixture(scope="module")
def pair() -> tuple[SlimRecognizer, TorchRecognizer]:
    bundle = load_bundle(DEFAULT)
    return SlimRecognizer.load(DEFAULT, num_threads=2), TorchRecognizer(bundle, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    return [audio for audio, _ in cv100_clips(3)]


def test_ctc_log_probs_and_paths_equal_the_torch_path(
    pair: tuple[SlimRecognizer, TorchRecognizer], clips: list[np.ndarray]
) -> None:
    slim, torch_path = pair
    for ours, theirs in zip(slim.infer(clips), torch_path.infer(clips), strict=True):
        assert ours.shape == theirs.shape
        np.testing.assert_allclose(ours, theirs, atol=2e-3)
        assert np.array_equal(ours.argmax(-1), theirs.argmax(-1))


def test_second_pass_text_equals_the_torch_path(
    pair: tuple[SlimRecognizer, TorchRecognizer], clips: list[np.ndarray]
) -> None:
    slim, torch_path = pair
    ours, theirs = slim.second_pass(clips), torch_path.second_pass(clips)
    assert [o.text for o in ours] == [t.text for t in theirs]
    assert all(o.text for o in ours)
    for o, t in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(o.log_probs, t.log_probs, atol=2e-3)


def test_silence_reads_as_nothing(pair: tuple[SlimRecognizer, TorchRecognizer]) -> None:
    silence = np.zeros(3 * 16000, np.float32)  # Whisper's decoder, in a beam search, reads "you" here
    for recognizer in pair:
        assert recognizer.second_pass([silence])[0].text == ""


def test_the_recognizer_reports_what_it_serves(pair: tuple[SlimRecognizer, TorchRecognizer]) -> None:
    slim, torch_path = pair
    assert (slim.runtime, slim.device, slim.precision) == ("onnx", "cpu", "fp32")
    assert slim.has_second_pass
    assert slim.num_parameters() == torch_path.num_parameters()


def test_a_bundle_whose_weights_do_not_fit_is_refused(tmp_path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "README.md"):
        (broken / name).write_bytes((DEFAULT / name).read_bytes())
    weights = load_file(str(DEFAULT / "model.safetensors"))
    weights["head.weight"] = weights["head.weight"][:, :10]
    save_file(weights, str(broken / "model.safetensors"))
    with pytest.raises(BundleError, match="head.weight has shape"):
        SlimRecognizer.load(broken)


def test_the_slim_path_imports_no_pytorch() -> None:
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['torchaudio'] = None\n"
        "import app.main, app.asr.slim.recognizer, app.engine.engine\n"
        "from app.asr.recognizer import open_recognizer\n"
        "r = open_recognizer('models/en-whisper-tiny', 'onnx', num_threads=1)\n"
        "print(type(r).__name__)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "SlimRecognizer"
