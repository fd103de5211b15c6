"""The torch-free networks (ONNX graphs built from NumPy weights) against the torch modules of the
shipped bundle: the CTC network's log-probs on one clip and on a padded batch, its greedy tokens,
the decoder step's cache, and the second pass's text."""

from __future__ import annotations

import logging
import subprocess
import sys

import numpy as np
import pytest
import torch

from app.asr.bundle import Bundle, load_bundle
from app.asr.bundle_files import read_bundle_files
from app.asr.configs import WhisperCTCConfig
from app.asr.features import WhisperLogMel
from app.asr.slim.graphs import cache_names, ctc_network, decoder_step
from app.asr.slim.second_pass import SlimSecondPass
from app.asr.slim.sessions import OnnxCtcNetwork, cpu_session
from app.asr.whisper.base import base_file, load_base
from app.asr.whisper.greedy import TopTokens
from app.asr.whisper.model import SecondPass
from app.asr.whisper.weights import WhisperDims
from tests.support import cv100_clips

BUNDLE = "models/en-whisper-tiny"
LOG_PROB_TOLERANCE = 2e-4  # max |difference| of the CTC log-probs, ONNX Runtime vs torch eager (7.5e-5 seen)


@pytest.fixture(scope="module")
def bundle() -> Bundle:
    return load_bundle(BUNDLE)


@pytest.fixture(scope="module")
def network(bundle: Bundle) -> WhisperCTCConfig:
    assert isinstance(bundle.config.model, WhisperCTCConfig)
    return bundle.config.model


@pytest.fixture(scope="module")
def ctc(network: WhisperCTCConfig) -> OnnxCtcNetwork:
    _, base = load_base(base_file(network.base))
    _, trained = read_bundle_files(BUNDLE)  # float32, as the stored float16 weights load
    return OnnxCtcNetwork(ctc_network(base, trained, network), 2)


@pytest.fixture(scope="module")
def clips() -> list[np.ndarray]:
    return [audio for audio, _ in cv100_clips(3)]


def log_mel(bundle: Bundle, waves: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
    """The bundle's log-mel of ``waves`` as one zero-padded batch, and the frames of each row."""
    batch = torch.zeros(len(waves), max(w.size for w in waves))
    for row, wave in enumerate(waves):
        batch[row, : wave.size] = torch.from_numpy(wave)
    frontend = WhisperLogMel(bundle.config.frontend)  # type: ignore[arg-type]
    return frontend(batch, torch.tensor([w.size for w in waves]))


def both(bundle: Bundle, ctc: OnnxCtcNetwork, waves: list[np.ndarray]) -> tuple[np.ndarray, ...]:
    """Torch's log-probs and lengths, then the graph's, of ``waves`` as one batch."""
    features, lengths = log_mel(bundle, waves)
    with torch.inference_mode():
        reference, ref_lengths = bundle.model(features, lengths)
    ours, our_lengths = ctc(features.numpy(), lengths.numpy())
    return reference.numpy(), ref_lengths.numpy(), ours, our_lengths


def test_ctc_graph_equals_torch_on_one_clip(bundle: Bundle, ctc: OnnxCtcNetwork, clips: list[np.ndarray]) -> None:
    reference, ref_lengths, ours, our_lengths = both(bundle, ctc, clips[:1])
    assert ours.shape == reference.shape and our_lengths.tolist() == ref_lengths.tolist()
    assert float(np.abs(ours - reference).max()) < LOG_PROB_TOLERANCE


def test_ctc_graph_equals_torch_on_a_padded_batch(bundle: Bundle, ctc: OnnxCtcNetwork, clips: list[np.ndarray]) -> None:
    waves = [clips[0], clips[1][:40_000], clips[2][:12_345]]
    reference, ref_lengths, ours, our_lengths = both(bundle, ctc, waves)
    assert our_lengths.tolist() == ref_lengths.tolist() == [-(-(w.size // 160) // 2) for w in waves]
    for row, n in enumerate(ref_lengths.tolist()):
        assert float(np.abs(ours[row, :n] - reference[row, :n]).max()) < LOG_PROB_TOLERANCE
    alone, _ = ctc(*(t.numpy() for t in log_mel(bundle, waves[2:])))
    n = int(our_lengths[2])
    assert float(np.abs(ours[2, :n] - alone[0]).max()) < LOG_PROB_TOLERANCE


def test_ctc_greedy_tokens_equal_torch(bundle: Bundle, ctc: OnnxCtcNetwork, clips: list[np.ndarray]) -> None:
    for wave in clips:
        reference, _, ours, _ = both(bundle, ctc, [wave])
        assert (reference.argmax(-1) != bundle.config.blank_id).any()
        assert ours.argmax(-1).tolist() == reference.argmax(-1).tolist()


def _random_caches(
    dims: WhisperDims, rows: int, frames: int, seed: int
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Random cross-attention keys and values of ``rows`` rows of ``frames`` frames, and empty
    self-attention caches for one sequence per row."""
    rng = np.random.default_rng(seed)
    head_dim = dims.d_model // dims.heads
    cross = {
        n: rng.standard_normal((rows, dims.heads, frames, head_dim), np.float32)
        for n in cache_names(dims.decoder_layers, "cross")
    }
    past = cache_names(dims.decoder_layers, "past")
    return cross, {n: np.zeros((rows, dims.heads, 0, head_dim), np.float32) for n in past}


def test_decoder_step_with_a_cache_equals_one_step_of_all_tokens(network: WhisperCTCConfig) -> None:
    dims, base = load_base(base_file(network.base))
    session = cpu_session(decoder_step(base, dims), 2)
    head_dim = dims.d_model // dims.heads
    cross, empty = _random_caches(dims, 1, 50, 0)
    tokens = np.array([[50257, 50362, 383, 3797]])
    outputs = ["logits", *cache_names(dims.decoder_layers, "present")]
    scoring = _scoring(dims)
    whole, *whole_cache = session.run(outputs, {"tokens": tokens, **empty, **cross, **scoring})
    _, *cache = session.run(outputs, {"tokens": tokens[:, :2], **empty, **cross, **scoring})
    past = dict(zip(cache_names(dims.decoder_layers, "past"), cache, strict=True))
    _, *cache = session.run(outputs, {"tokens": tokens[:, 2:3], **past, **cross, **scoring})
    past = dict(zip(cache_names(dims.decoder_layers, "past"), cache, strict=True))
    last, *cache = session.run(outputs, {"tokens": tokens[:, 3:], **past, **cross, **scoring})
    assert whole.shape == (1, dims.vocab_size) and cache[0].shape == (1, dims.heads, 4, head_dim)
    np.testing.assert_allclose(last, whole, atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(cache[0], whole_cache[0], atol=1e-5)


def test_second_pass_text_equals_torch(bundle: Bundle, network: WhisperCTCConfig, clips: list[np.ndarray]) -> None:
    assert bundle.second_pass is not None
    slim = SlimSecondPass.from_base(network, 2, "fp32", read_bundle_files(BUNDLE)[1])  # with the bundle's adapter
    assert slim.num_parameters() == bundle.second_pass.num_parameters()
    for wave in clips:
        features, lengths = log_mel(bundle, [wave])
        reference = bundle.second_pass.transcribe(features, lengths)
        assert reference[0] and slim.transcribe(features.numpy(), lengths.numpy()) == reference
    features, lengths = log_mel(bundle, [clips[0], clips[1][:30_000]])
    assert slim.transcribe(features.numpy(), lengths.numpy()) == bundle.second_pass.transcribe(features, lengths)


def _scoring(dims: WhisperDims, k: int = 5, end: int = 50256, suppress: tuple[int, ...] = ()) -> dict[str, np.ndarray]:
    """The decoder step's scoring inputs: suppressed tokens, how many likeliest tokens, end-of-text."""
    bias = np.zeros(dims.vocab_size, np.float32)
    bias[list(suppress)] = -np.inf
    return {"logit_bias": bias, "top_k": np.array([k]), "end_token": np.array([end])}


def test_the_decoder_step_ranks_its_likeliest_tokens_as_the_searches_do(network: WhisperCTCConfig) -> None:
    dims, base = load_base(base_file(network.base))
    session = cpu_session(decoder_step(base, dims), 2)
    cross, empty = _random_caches(dims, 3, 40, 2)
    feeds = {"tokens": np.array([[50257, 50362, 383], [50257, 50362, 464], [50257, 50362, 40]]), **empty, **cross}
    logits = session.run(["logits"], {**feeds, **_scoring(dims)})[0]
    suppressed = tuple(np.argsort(logits[0])[-3:].tolist())  # row 0's three likeliest tokens
    names = ["top_tokens", "top_log_probs", "end_log_prob"]
    tokens, log_probs, end = session.run(names, {**feeds, **_scoring(dims, 8, 13, suppressed)})
    logits[:, list(suppressed)] = -np.inf
    expected = TopTokens.of(logits, 8, 13)
    assert tokens.shape == log_probs.shape == (3, 8) and end.shape == (3, 1)
    np.testing.assert_array_equal(tokens, expected.tokens)
    assert not set(suppressed) & set(tokens[0].tolist())
    np.testing.assert_allclose(log_probs, expected.log_probs, atol=1e-4)
    np.testing.assert_allclose(end[:, 0], expected.end, atol=1e-4)
    assert (np.diff(log_probs, axis=1) <= 0).all()  # best first


def test_a_masked_decoder_step_reads_only_each_row_s_own_frames(network: WhisperCTCConfig) -> None:
    dims, base = load_base(base_file(network.base))
    plain, masked = (cpu_session(decoder_step(base, dims, cross_masked), 2) for cross_masked in (False, True))
    assert "cross_bias" not in {i.name for i in plain.get_inputs()}  # the 30 s window: every frame counts
    rng = np.random.default_rng(1)
    head_dim = dims.d_model // dims.heads
    names = cache_names(dims.decoder_layers, "cross")
    cross = {n: rng.standard_normal((2, dims.heads, 50, head_dim), np.float32) for n in names}
    bias = np.zeros((2, 1, 1, 50), np.float32)
    bias[1, ..., 30:] = -np.inf  # row 1 is 30 frames long, padded to 50
    empty = {n: np.zeros((2, dims.heads, 0, head_dim), np.float32) for n in cache_names(dims.decoder_layers, "past")}
    tokens = np.array([[50257, 50362, 383]] * 2)
    scoring = _scoring(dims)
    both = masked.run(["logits"], {"tokens": tokens, **empty, **cross, "cross_bias": bias, **scoring})[0]
    for row, frames in ((0, 50), (1, 30)):
        alone = {n: k[row : row + 1, :, :frames] for n, k in cross.items()}
        past = {n: v[:1] for n, v in empty.items()}
        reference = plain.run(["logits"], {"tokens": tokens[:1], **past, **alone, **scoring})[0]
        np.testing.assert_allclose(both[row], reference[0], atol=1e-4, rtol=1e-4)


@pytest.fixture(scope="module")
def own_length(bundle: Bundle, network: WhisperCTCConfig) -> tuple[SecondPass, SlimSecondPass]:
    """Both runtimes' second pass of the bundle with its encoder at each clip's own length."""
    config = network.model_copy(update={"second_pass_states": "own_length"})
    trained = read_bundle_files(BUNDLE)[1]
    return SecondPass.from_base(config, trained), SlimSecondPass.from_base(config, 2, "fp32", trained)


def test_own_length_second_pass_equals_torch_and_masks_a_padded_batch(
    bundle: Bundle, own_length: tuple[SecondPass, SlimSecondPass], clips: list[np.ndarray]
) -> None:
    torch_pass, slim = own_length
    assert torch_pass.own_length and slim.own_length
    waves = [clips[0], clips[1][:30_000], clips[2][:50_000]]
    alone = []
    for wave in waves:
        features, lengths = log_mel(bundle, [wave])
        cross = slim.cross_keys(features.numpy(), lengths.numpy())
        assert cross["cross_key_0"].shape[2] == -(-features.shape[-1] // 2)  # the clip's frames, not 1500
        alone += torch_pass.transcribe(features, lengths)
    assert all(alone)
    features, lengths = log_mel(bundle, waves)
    assert torch_pass.transcribe(features, lengths) == alone  # padded rows masked, in both runtimes
    assert slim.transcribe(features.numpy(), lengths.numpy()) == alone
    bias = slim.cross_keys(features.numpy(), lengths.numpy())["cross_bias"]
    assert bias.shape == (3, 1, 1, -(-features.shape[-1] // 2))
    assert np.isinf(bias[1]).any() and not np.isinf(bias[0]).any()


@pytest.fixture(scope="module")
def int8_pass(network: WhisperCTCConfig) -> SlimSecondPass:
    """The served second pass: own length, integer matrix products, the bundle's joint search."""
    config = network.model_copy(update={"second_pass_states": "own_length"})
    return SlimSecondPass.from_base(config, 2, "int8", read_bundle_files(BUNDLE)[1])


def test_the_int8_second_pass_encodes_each_row_of_a_batch_as_it_would_alone(
    bundle: Bundle, int8_pass: SlimSecondPass, clips: list[np.ndarray]
) -> None:
    # integer matrix products quantize each run's input with one scale: rows encoded together
    # would share it (and their padding's), so a transcript would depend on its batchmates
    slim = int8_pass
    waves = [clips[0], clips[1][:30_000], clips[2][:50_000]]
    features, lengths = log_mel(bundle, waves)
    together = slim.cross_keys(features.numpy(), lengths.numpy())
    for row, wave in enumerate(waves):
        features, lengths = log_mel(bundle, [wave])
        alone = slim.cross_keys(features.numpy(), lengths.numpy())
        frames = alone["cross_key_0"].shape[2]
        assert np.isinf(together["cross_bias"][row, ..., frames:]).all()
        np.testing.assert_array_equal(together["cross_bias"][row, ..., :frames], alone.pop("cross_bias")[0])
        for name, keys in alone.items():
            np.testing.assert_array_equal(together[name][row, :, :frames], keys[0])


def test_the_int8_decoder_step_scores_each_sequence_as_it_would_alone(
    bundle: Bundle, int8_pass: SlimSecondPass, clips: list[np.ndarray]
) -> None:
    # the decoder runs every row's sequences together: its activations are quantized row by row
    waves = [clips[0], clips[1][:30_000], clips[2][:50_000] * 0.05]
    features, lengths = log_mel(bundle, waves)
    cross = int8_pass.cross_keys(features.numpy(), lengths.numpy())
    dims = int8_pass.dims
    head_dim = dims.d_model // dims.heads
    past = {n: np.zeros((3, dims.heads, 0, head_dim), np.float32) for n in cache_names(dims.decoder_layers, "past")}
    tokens = np.array([[50257, 50362, 383], [50257, 50362, 464], [50257, 50362, 40]])
    names = ["logits", "top_log_probs"]
    together = int8_pass.decoder.run(names, {"tokens": tokens, **past, **cross, **_scoring(dims)})
    for row in range(3):
        alone = int8_pass.decoder.run(
            names,
            {
                "tokens": tokens[row : row + 1],
                **{n: v[:1] for n, v in past.items()},
                **{n: v[row : row + 1] for n, v in cross.items()},
                **_scoring(dims),
            },
        )
        for both, one in zip(together, alone, strict=True):
            np.testing.assert_array_equal(both[row], one[0])


def test_the_int8_decoder_step_multiplies_integers_and_ranks_tokens_as_fp32(
    network: WhisperCTCConfig, caplog: pytest.LogCaptureFixture
) -> None:
    import onnx

    from app.asr.onnx_int8 import quantize_onnx_integer

    dims, state = load_base(base_file(network.base))
    graph = decoder_step(state, dims)
    with caplog.at_level(logging.DEBUG):
        quantized = quantize_onnx_integer(graph)
    assert not [r for r in caplog.records if "onnxruntime" in r.pathname]  # a line per tensor otherwise
    ops = {node.op_type for node in onnx.load_from_string(quantized).graph.node}
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= ops or "DynamicQuantizeMatMul" in ops
    assert len(quantized) < 0.5 * len(graph)
    cross, empty = _random_caches(dims, 1, 50, 0)
    feeds = {"tokens": np.array([[50257, 50362, 383]]), **empty, **cross, **_scoring(dims)}
    exact = cpu_session(graph, 2).run(["logits"], feeds)[0][0]
    approximate = cpu_session(quantized, 2).run(["logits"], feeds)[0][0]
    top = set(np.argsort(exact)[-5:].tolist())
    assert int(approximate.argmax()) in top and int(exact.argmax()) in set(np.argsort(approximate)[-5:].tolist())
    assert np.corrcoef(exact, approximate)[0, 1] > 0.95  # 0.97 on these random keys and values


def test_the_int8_ctc_network_multiplies_integers_but_convolves_and_reads_its_head_in_float(
    network: WhisperCTCConfig,
) -> None:
    import onnx

    from app.asr.slim.recognizer import ctc_graph

    _, base = load_base(base_file(network.base))
    _, trained = read_bundle_files(BUNDLE)
    graph = onnx.load_from_string(ctc_graph(base, trained, network, "int8")).graph
    ops = [node.op_type for node in graph.node]
    assert ops.count("MatMulInteger") == 4 * network.encoder_layers and "ConvInteger" not in ops
    head = [node for node in graph.node if node.op_type == "MatMul" and node.input[1].startswith("head.")]
    assert len(head) == 1
    assert ctc_graph(base, trained, network, "fp32") == ctc_network(base, trained, network)


def test_second_pass_precision_is_fp32_or_int8(network: WhisperCTCConfig) -> None:
    with pytest.raises(ValueError, match="fp32 or int8, not fp16"):
        SlimSecondPass.from_base(network, 1, "fp16")


def test_slim_networks_import_without_torch() -> None:
    code = (
        "import sys; sys.modules['torch'] = None; sys.modules['torchaudio'] = None\n"
        "import app.asr.slim.graphs, app.asr.slim.second_pass, app.asr.slim.sessions"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
