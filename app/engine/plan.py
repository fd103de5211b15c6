"""The serving plan: every ``auto`` and ``0`` setting resolved once, from the settings and the facts.

It is resolved in two steps, both here. Before the model loads, :func:`plan_hardware` fixes what
the machine decides: the device, precision, how batches run, model workers, threads and batch
size (facts: whether CUDA is visible, the cores this process may use). After it loads,
:func:`plan_serving` adds what the model decides: the runtime and the precision for its network
(the builder resolves them for the bundle's network type with :meth:`HardwarePlan.runtime_for`
and :meth:`HardwarePlan.precision_for`), one worker for ``compile``, the batcher's limits, the
default decoders (facts: a second pass, a language model) and where each decoder's recordings are
cut (fact: Silero VAD is installed). Step two takes device, precision,
runtime and batch execution as the recognizer reports them: the shipped loader builds it from step
one, so they are step one's; a test's stand-in model may run elsewhere, and the plan then says what
runs. The engine logs the plan once at start and ``/v1/models`` shows it; nothing else reads
``auto``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from app.config import Settings
from app.engine.batcher import BatchLimits
from app.engine.layout import cpu_cores, worker_layout
from app.process import torch_installed

VAD_SAMPLE_RATE = 16000  # Silero VAD's (app.asr.vad.SAMPLE_RATE, not imported: it loads ONNX Runtime)

HALF_PRECISIONS = ("fp16", "bf16")


@dataclass(frozen=True)
class Machine:
    """The facts about this machine that the plan depends on."""

    cuda: bool  # a CUDA device is visible
    cores: int  # the cores this process may use (affinity, within a container's CPU limit)
    torch: bool = True  # PyTorch is installed (the slim install has ONNX Runtime only)
    vad: bool = True  # Silero VAD's model file is installed

    @classmethod
    def detect(cls) -> Machine:
        from app.asr import vad

        if not torch_installed():
            return cls(cuda=False, cores=cpu_cores(), torch=False, vad=vad.installed())
        import torch

        return cls(cuda=torch.cuda.is_available(), cores=cpu_cores(), vad=vad.installed())


@dataclass(frozen=True)
class HardwarePlan:
    """Step one, before the model loads: where and how wide the model runs."""

    device: str  # cpu or cuda
    precision: str  # fp32, fp16, bf16 or int8; precision_for resolves auto per network on the CPU
    runtime_setting: str  # ASR_RUNTIME as set; auto is resolved per network by runtime_for
    pads_batches: bool  # a batch runs as one padded tensor (else item by item)
    model_workers: int
    num_threads: int  # CPU threads per model worker
    max_batch_size: int
    torch: bool = True  # PyTorch is installed
    precision_setting: str = "auto"  # ASR_PRECISION as set
    vad: bool = True  # Silero VAD is installed

    def runtime_for(self, network: str) -> str:
        """The runtime for a bundle whose network is of type ``network`` (``sepconv_ctc``, ``whisper_ctc``)."""
        return resolve_runtime(self.runtime_setting, self.device, self.precision, network, self.torch)

    def precision_for(self, network: str) -> str:
        """The precision for a bundle whose network is of type ``network``: ``auto`` on the CPU is
        int8 for a Whisper network on ONNX Runtime (about half fp32's time at the same dev WER:
        ``app.asr.slim.recognizer.ctc_graph``) and fp32 otherwise (the convolutional network's
        int8 is slower than its fp32)."""
        automatic = self.precision_setting == "auto" and self.device == "cpu"
        if automatic and network == "whisper_ctc" and self.runtime_for(network) == "onnx":
            return "int8"
        return self.precision


@dataclass(frozen=True)
class LoadedModel:
    """The facts about the loaded model that the plan depends on."""

    device: str  # what the recognizer was built with: the hardware plan's for the shipped loader
    precision: str
    runtime: str  # HardwarePlan.runtime_for its network, for the shipped loader
    pads_batches: bool  # how the recognizer runs a batch
    sample_rate: int
    has_second_pass: bool
    has_lm: bool


@dataclass(frozen=True)
class ServingPlan:
    """How this server serves: every setting with ``auto`` or ``0`` resolved."""

    device: str
    precision: str
    runtime: str
    batch_execution: str  # padded or per_item
    model_workers: int
    num_threads: int
    max_batch_size: int
    decoder: str  # the default decoder of requests: greedy, beam or attention
    stream_final_decoder: str  # the decoder of stream finals
    stream_partial_decoder: str  # the decoder of stream partials: greedy or beam
    split: str  # where the CTC path's recordings are cut into pieces: pauses or length (app.asr.segment)
    second_pass_split: str  # the same for the second pass
    limits: BatchLimits  # the batcher's (both batchers', with a second pass)

    def describe(self) -> dict[str, Any]:
        """The plan as flat JSON-ready fields (the log line and ``/v1/models``)."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "limits"}
        limits = self.limits
        return {
            **fields,
            "max_wait_ms": limits.max_wait_s * 1000,
            "max_batch_samples": limits.max_batch_samples,
            "max_queue_samples": limits.max_queue_samples,
            "min_batch_fill": limits.min_fill,
            "batches_in_flight": limits.in_flight,
        }

    def log_line(self) -> str:
        """One ``key=value`` line with every field."""
        return " ".join(f"{key}={_text(value)}" for key, value in self.describe().items())


def _text(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def plan_hardware(settings: Settings, machine: Machine) -> HardwarePlan:
    """Step one: device, precision, batch execution, workers, threads and batch size."""
    device = resolve_device(settings.device, machine.cuda)
    precision = resolve_precision(settings.precision, device)
    if settings.runtime != "auto":  # an explicit runtime is checked now; auto waits for the network
        resolve_runtime(settings.runtime, device, precision, "", machine.torch)
    layout = worker_layout(settings.model_workers, settings.num_threads, settings.max_batch_size, device, machine.cores)
    return HardwarePlan(
        device=device,
        precision=precision,
        runtime_setting=settings.runtime,
        pads_batches=resolve_batch_execution(settings.batch_execution, device),
        model_workers=layout.workers,
        num_threads=layout.threads,
        max_batch_size=layout.batch_size,
        torch=machine.torch,
        precision_setting=settings.precision,
        vad=machine.vad,
    )


def plan_serving(settings: Settings, hardware: HardwarePlan, model: LoadedModel) -> ServingPlan:
    """Step two, once the model is loaded: runtime, workers, batch limits and decoders."""
    workers = 1 if model.runtime == "compile" else hardware.model_workers  # compiling is not thread-safe
    decoder = resolve_decoder(settings.decoder, model.has_second_pass, model.has_lm)
    rate = model.sample_rate
    # Batches run item by item (CPU) get one batch handed over ahead of the workers, so a worker
    # that finishes starts the next at once instead of waiting for the event loop (about 4% more
    # served audio here, docs/benchmarks.md); padded batches (GPU) are not formed early, as an
    # early batch is a smaller one.
    limits = BatchLimits(
        max_batch_size=hardware.max_batch_size,
        max_wait_s=settings.max_wait_ms / 1000,
        max_batch_samples=int(settings.max_batch_audio_seconds * rate),
        max_queue_samples=int(settings.max_queue_audio_seconds * rate),
        min_fill=settings.min_batch_fill,
        in_flight=workers + (0 if model.pads_batches else 1),
        padded=model.pads_batches,
    )
    return ServingPlan(
        device=model.device,
        precision=model.precision,
        runtime=model.runtime,
        batch_execution="padded" if model.pads_batches else "per_item",
        model_workers=workers,
        num_threads=hardware.num_threads,
        max_batch_size=hardware.max_batch_size,
        decoder=decoder,
        stream_final_decoder=decoder if settings.stream_final_decoder == "auto" else settings.stream_final_decoder,
        stream_partial_decoder=resolve_partial_decoder(settings.stream_partial_decoder, model.has_lm),
        split=resolve_split(settings.split, hardware.vad, rate, second_pass=False),
        second_pass_split=resolve_split(settings.split, hardware.vad, rate, second_pass=True),
        limits=limits,
    )


def resolve_device(device: str, cuda: bool) -> str:
    """``auto`` becomes ``cuda`` when a GPU is visible, else ``cpu``."""
    if device == "auto":
        return "cuda" if cuda else "cpu"
    if device == "cuda" and not cuda:
        raise RuntimeError("ASR_DEVICE=cuda but no CUDA device is available")
    return device


def resolve_precision(precision: str, device: str) -> str:
    """``auto`` is fp16 on CUDA and fp32 on CPU (:meth:`HardwarePlan.precision_for` may then pick
    int8 for the network); half precisions need CUDA, int8 the CPU."""
    if precision == "auto":
        return "fp16" if device == "cuda" else "fp32"
    if precision in HALF_PRECISIONS and device != "cuda":
        raise RuntimeError(f"precision {precision} needs a CUDA device; use fp32 or int8 on CPU")
    if precision == "int8" and device != "cpu":
        raise RuntimeError("precision int8 runs on the CPU (ONNX Runtime); use fp16 on CUDA")
    return precision


def resolve_runtime(
    runtime: str, device: str, precision: str, network: str = "sepconv_ctc", torch_installed: bool = True
) -> str:
    """``auto`` is PyTorch on CUDA and ONNX Runtime on CPU, measured fastest there for both network
    types (docs/benchmarks.md): the convolutional ``sepconv_ctc`` exported from PyTorch, the
    transformer ``whisper_ctc`` built from its weights without PyTorch (``app.asr.slim``).

    int8 exists only as an ONNX Runtime model. Without PyTorch (the slim install) only a
    ``whisper_ctc`` network on ONNX Runtime can be served.
    """
    if runtime == "auto":
        runtime = "onnx" if device == "cpu" else "torch"
    if runtime == "onnx" and device != "cpu":
        raise RuntimeError("the onnx runtime runs on the CPU here; use torch or compile on CUDA")
    if precision == "int8" and runtime != "onnx":
        raise RuntimeError(f"precision int8 needs the onnx runtime, not {runtime}")
    if not torch_installed and (runtime != "onnx" or network == "sepconv_ctc"):
        what = f"the {runtime} runtime" if runtime != "onnx" else f"a {network} network"
        raise RuntimeError(f"{what} needs PyTorch, which this install lacks (pip install '.[torch]')")
    return runtime


def resolve_batch_execution(batch_execution: str, device: str) -> bool:
    """Whether batches run as one padded tensor: ``auto`` pads on CUDA and runs item by item on CPU.

    On a CPU a batch's items cost the same run one after another, minus the padding and the
    cache misses of a wider tensor (about 9% for batches of 4 here, docs/benchmarks.md); a GPU
    needs the whole batch in one launch.
    """
    if batch_execution == "auto":
        return device != "cpu"
    return batch_execution == "padded"


def resolve_partial_decoder(decoder: str, has_lm: bool) -> str:
    """``auto`` is beam search when the model has an LM, else greedy; beam without an LM is refused."""
    if decoder == "auto":
        return "beam" if has_lm else "greedy"
    if decoder == "beam" and not has_lm:
        raise RuntimeError("ASR_STREAM_PARTIAL_DECODER=beam needs a language model, and the served model has none")
    return decoder


def resolve_split(split: str, vad: bool, sample_rate: int, second_pass: bool) -> str:
    """``auto`` cuts the CTC path's recordings at pauses when Silero VAD is installed (it runs at
    16 kHz), and the second pass's by length (chosen on the dev sets: docs/benchmarks.md, "Long
    recordings"); ``pauses`` without Silero VAD is refused."""
    able = vad and sample_rate == VAD_SAMPLE_RATE
    if split == "auto":
        return "pauses" if able and not second_pass else "length"
    if split == "pauses" and not able:
        raise RuntimeError(
            f"ASR_SPLIT=pauses needs Silero VAD (the silero-vad package) and a {VAD_SAMPLE_RATE} Hz model"
        )
    return split


def resolve_decoder(decoder: str, has_second_pass: bool, has_lm: bool) -> str:
    """``auto`` is the second pass when the model has one, else beam search with an LM, else greedy."""
    if decoder != "auto":
        return decoder
    return "attention" if has_second_pass else "beam" if has_lm else "greedy"
