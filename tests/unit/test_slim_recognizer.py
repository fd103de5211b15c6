"""The slim recognizer (NumPy and ONNX Runtime, no PyTorch) equals the PyTorch recognizer of the
shipped default bundle: the same CTC log-probs within float tolerance, the same best paths and
the same second-pass text, on real speech (its second pass in fp32; the served int8 one is
checked against it)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from app.asr.bundle import BundleError, load_bundle
from app.asr.slim.recognizer import SlimRecognizer
from app.asr.torch_recognizer import TorchRecognizer
from tests.support import cv100_clips, so762_test_clips

ROOT = Path(__file__).resolve().parents[2]
DEFAULT = ROOT / "models" / "en-whisper-tiny"


@pytest.fixture(scope="module")
def pair() -> tuple[SlimRecognizer, TorchRecognizer]:
    bundle = load_bundle(DEFAULT)
    slim = SlimRecognizer.load(DEFAULT, num_threads=2, second_pass_precision="fp32")
    return slim, TorchRecognizer(bundle, device="cpu", precision="fp32")


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


def test_a_prompted_second_pass_equals_the_torch_path_and_takes_up_the_prompt(
    pair: tuple[SlimRecognizer, TorchRecognizer],
) -> None:
    clips = [audio for audio, _ in so762_test_clips("jayme")[:3]]
    slim, torch_path = pair
    ours, theirs = slim.second_pass(clips, prompt="Jayme."), torch_path.second_pass(clips, prompt="Jayme.")
    assert [o.text for o in ours] == [t.text for t in theirs]
    plain = slim.second_pass(clips)
    assert sum("Jayme" in o.text for o in ours) > sum("Jayme" in p.text for p in plain), [o.text for o in ours]


def test_the_int8_second_pass_hears_what_the_fp32_one_hears(
    pair: tuple[SlimRecognizer, TorchRecognizer], clips: list[np.ndarray]
) -> None:
    import jiwer

    from app.asr.text import spoken_form

    exact = pair[0]
    served = SlimRecognizer.load(DEFAULT, num_threads=2)  # the default: integer matrix products
    assert served.second_pass_precision == "int8" and exact.second_pass_precision == "fp32"
    ours, theirs = served.second_pass(clips), exact.second_pass(clips)
    for o, t in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(o.log_probs, t.log_probs, atol=2e-3)  # the CTC path is not the second pass
        assert jiwer.wer(spoken_form(t.text), spoken_form(o.text)) <= 0.25, (o.text, t.text)


def test_the_int8_ctc_network_reads_what_the_fp32_one_reads(
    pair: tuple[SlimRecognizer, TorchRecognizer], clips: list[np.ndarray]
) -> None:
    import jiwer

    from app.asr.ctc import GreedyDecoder

    exact = pair[0]
    served = SlimRecognizer.load(DEFAULT, precision="int8", num_threads=2)
    config = served.config
    greedy = GreedyDecoder(config.tokens, config.blank_id, config.frame_seconds, config.word_delimiter)
    texts, references = [], []
    for ours, theirs in zip(served.infer(clips), exact.infer(clips), strict=True):
        assert ours.shape == theirs.shape
        # frames whose likeliest token differs: under 5 % on CPUs with VNNI, 5.4 % on an AVX2-only
        # AMD EPYC (whose 8-bit products add pairs in 16 bits and saturate)
        assert (ours.argmax(-1) == theirs.argmax(-1)).mean() > 0.9
        texts.append(greedy.decode(ours).text)
        references.append(greedy.decode(theirs).text)
    assert all(references)
    # over the clips, not per clip: one short clip the head hardly reads differs by 4 of 17
    # characters on the AVX2 CPU (0.08 over the three)
    assert jiwer.cer(references, texts) <= 0.1, (texts, references)


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


def test_the_server_setting_chooses_the_second_pass_precision(monkeypatch: pytest.MonkeyPatch) -> None:
    from app.asr.recognizer import open_recognizer
    from app.config import Settings
    from app.engine.engine import load_recognizer
    from app.engine.plan import Machine, plan_hardware

    for setting, expected in (("auto", "int8"), ("fp32", "fp32"), ("int8", "int8")):
        monkeypatch.setenv("ASR_SECOND_PASS_PRECISION", setting)
        settings = Settings(model_path=DEFAULT, runtime="onnx", num_threads=1)
        recognizer = load_recognizer(settings, plan_hardware(settings, Machine(cuda=False, cores=2)))
        assert isinstance(recognizer, SlimRecognizer) and recognizer.second_pass_precision == expected
        assert recognizer.precision == "int8"  # ASR_PRECISION=auto: the CTC network's integer matrix products
    with pytest.raises(ValueError, match="second-pass precision int8 needs the onnx runtime"):
        open_recognizer(DEFAULT, "torch", second_pass_precision="int8")
