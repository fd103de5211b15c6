"""The serving plan: every auto and 0 setting resolved once, from the settings and the facts."""

from __future__ import annotations

import logging
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from app.config import Settings
from app.engine.batcher import BatchLimits
from app.engine.plan import LoadedModel, Machine, ServingPlan, plan_hardware, plan_serving
from app.main import create_app
from tests.support import FakeFactory

CPU = Machine(cuda=False, cores=4)
GPU = Machine(cuda=True, cores=16)


def plan_for(
    machine: Machine, network: str = "sepconv_ctc", second_pass: bool = False, lm: bool = False, **settings: Any
) -> ServingPlan:
    """Both steps, with the recognizer built as the shipped loader builds it."""
    chosen = Settings.model_validate({"warmup": False, **settings})
    hardware = plan_hardware(chosen, machine)
    runtime, precision = hardware.runtime_for(network), hardware.precision_for(network)
    model = LoadedModel(hardware.device, precision, runtime, hardware.pads_batches, 16000, second_pass, lm)
    return plan_serving(chosen, hardware, model)


def test_auto_on_a_cpu() -> None:
    plan = plan_for(CPU)
    assert plan == ServingPlan(
        device="cpu",
        precision="fp32",
        runtime="onnx",
        batch_execution="per_item",
        model_workers=4,
        num_threads=1,
        max_batch_size=4,
        decoder="greedy",
        stream_final_decoder="greedy",
        stream_partial_decoder="greedy",
        split="pauses",
        second_pass_split="length",
        limits=BatchLimits(
            max_batch_size=4,
            max_wait_s=0.005,
            max_batch_samples=240 * 16000,
            max_queue_samples=3600 * 16000,
            min_fill=0.8,
            in_flight=5,  # one batch handed over ahead of the four workers
            padded=False,
        ),
    )


def test_auto_on_cuda() -> None:
    plan = plan_for(GPU, second_pass=True)
    assert (plan.device, plan.precision, plan.runtime, plan.batch_execution) == ("cuda", "fp16", "torch", "padded")
    assert (plan.model_workers, plan.num_threads, plan.max_batch_size) == (1, 16, 64)
    assert (plan.limits.in_flight, plan.limits.padded) == (1, True)
    assert (plan.decoder, plan.stream_final_decoder) == ("attention", "attention")


def test_the_runtime_follows_the_bundles_network() -> None:
    assert plan_for(CPU, network="sepconv_ctc").runtime == "onnx"
    assert plan_for(CPU, network="whisper_ctc").runtime == "onnx"
    assert plan_for(CPU, network="whisper_ctc", precision="int8").runtime == "onnx"
    assert plan_for(GPU, network="sepconv_ctc").runtime == "torch"


def test_auto_precision_on_a_cpu_is_int8_for_a_whisper_network_on_onnx() -> None:
    assert plan_for(CPU, network="whisper_ctc").precision == "int8"
    assert plan_for(CPU, network="sepconv_ctc").precision == "fp32"  # its int8 is slower than its fp32
    assert plan_for(CPU, network="whisper_ctc", runtime="torch").precision == "fp32"
    assert plan_for(CPU, network="whisper_ctc", precision="fp32").precision == "fp32"
    assert plan_for(GPU, network="whisper_ctc").precision == "fp16"


@pytest.mark.parametrize(
    "second_pass,lm,expected", [(True, True, "attention"), (False, True, "beam"), (False, False, "greedy")]
)
def test_the_auto_decoder_follows_the_model(second_pass: bool, lm: bool, expected: str) -> None:
    plan = plan_for(CPU, second_pass=second_pass, lm=lm)
    assert plan.decoder == plan.stream_final_decoder == expected


@pytest.mark.parametrize(
    "setting,lm,expected", [("auto", True, "beam"), ("auto", False, "greedy"), ("greedy", True, "greedy")]
)
def test_partials_are_beam_searched_when_the_model_has_an_lm(setting: str, lm: bool, expected: str) -> None:
    assert plan_for(CPU, lm=lm, stream_partial_decoder=setting).stream_partial_decoder == expected


@pytest.mark.parametrize(
    "setting,vad,ctc,second",
    [
        ("auto", True, "pauses", "length"),
        ("auto", False, "length", "length"),
        ("pauses", True, "pauses", "pauses"),
        ("length", True, "length", "length"),
    ],
)
def test_the_ctc_path_cuts_at_pauses_when_silero_vad_is_installed(
    setting: str, vad: bool, ctc: str, second: str
) -> None:
    plan = plan_for(Machine(cuda=False, cores=4, vad=vad), split=setting)
    assert (plan.split, plan.second_pass_split) == (ctc, second)


def test_cutting_at_pauses_without_silero_vad_fails_before_serving() -> None:
    with pytest.raises(RuntimeError, match="ASR_SPLIT=pauses needs Silero VAD"):
        plan_for(Machine(cuda=False, cores=4, vad=False), split="pauses")


def test_beam_partials_without_an_lm_fail_before_serving() -> None:
    with pytest.raises(RuntimeError, match="ASR_STREAM_PARTIAL_DECODER=beam needs a language model"):
        plan_for(CPU, lm=False, stream_partial_decoder="beam")


def test_explicit_settings_win() -> None:
    plan = plan_for(
        GPU,
        second_pass=True,
        device="cpu",
        precision="int8",
        runtime="onnx",
        batch_execution="padded",
        model_workers=2,
        num_threads=3,
        max_batch_size=8,
        decoder="greedy",
        stream_final_decoder="beam",
        max_wait_ms=20.0,
    )
    assert (plan.device, plan.precision, plan.runtime, plan.batch_execution) == ("cpu", "int8", "onnx", "padded")
    assert (plan.model_workers, plan.num_threads, plan.max_batch_size) == (2, 3, 8)
    assert (plan.decoder, plan.stream_final_decoder) == ("greedy", "beam")
    assert (plan.limits.in_flight, plan.limits.max_wait_s) == (2, 0.02)


def test_compile_runs_on_one_worker_with_the_threads_of_the_layout() -> None:
    plan = plan_for(CPU, runtime="compile", model_workers=2)
    assert (plan.runtime, plan.model_workers, plan.num_threads, plan.limits.in_flight) == ("compile", 1, 2, 2)


@pytest.mark.parametrize(
    "machine,settings,message",
    [
        (CPU, {"device": "cuda"}, "no CUDA device"),
        (CPU, {"precision": "fp16"}, "needs a CUDA device"),
        (GPU, {"precision": "int8"}, "int8 runs on the CPU"),
        (GPU, {"runtime": "onnx"}, "onnx runtime runs on the CPU"),
        (CPU, {"runtime": "torch", "precision": "int8"}, "int8 needs the onnx runtime"),
    ],
)
def test_impossible_choices_fail_before_the_model_loads(
    machine: Machine, settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(RuntimeError, match=message):
        plan_hardware(Settings.model_validate(settings), machine)


def test_the_plan_is_logged_once_and_shown_in_v1_models(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(warmup=False, model_workers=1, max_batch_size=2, stream_final_decoder="greedy")
    app = create_app(settings, recognizer_factory=FakeFactory(second_pass_text="hi"))
    with caplog.at_level(logging.INFO, logger="app.engine.engine"), TestClient(app) as client:
        deadline = time.monotonic() + 10
        while client.get("/readyz").status_code != 200 and time.monotonic() < deadline:
            time.sleep(0.02)
        card = client.get("/v1/models").json()["data"][0]
    serving = card["serving"]
    assert serving["device"] == card["device"] == "cpu" and serving["runtime"] == card["runtime"] == "torch"
    assert (serving["model_workers"], serving["max_batch_size"], serving["batch_execution"]) == (1, 2, "padded")
    assert serving["decoder"] == card["default_decoder"] == "attention"
    assert serving["stream_final_decoder"] == "greedy"
    assert serving["stream_partial_decoder"] == "greedy"  # the fake model has no LM
    assert (serving["split"], serving["second_pass_split"]) == ("pauses", "length")  # silero-vad is a dependency
    lines = [r.getMessage() for r in caplog.records if "serving plan:" in r.getMessage()]
    assert len(lines) == 1
    for key, value in serving.items():
        shown = f"{value:g}" if isinstance(value, float) else str(value)
        assert f"{key}={shown}" in lines[0]
