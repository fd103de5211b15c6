"""When a live stream's utterance ends, and where an over-long one is cut.

An utterance ends (its final is due) after ``silence_ms`` of silence once speech was heard: the
silence as the speech gate hears it (Silero VAD or frame energy, :mod:`app.asr.incremental`), or a
run of confident CTC blanks as long at the end of the latest window's log-probs. At
``max_utterance_s`` it is cut at the quietest 20 ms of its last second (not before its committed
frames). An :class:`Endpointer` holds one utterance's state; :meth:`Endpointer.reset` starts the next.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from app.asr.incremental import SpeechGate, Utterance, quietest_point

BLANK_PROBABILITY = 0.95  # a frame counts as silence for endpointing above this blank probability


def blank_run(log_probs: np.ndarray, blank_id: int) -> int:
    """Confident blank frames ending ``log_probs`` (frames, vocab) after its last emitted token (0 if none)."""
    spoken = np.flatnonzero(log_probs.argmax(axis=1) != blank_id)
    if spoken.size == 0:
        return 0
    after = np.exp(log_probs[spoken[-1] + 1 :, blank_id]) >= BLANK_PROBABILITY
    unsure = np.flatnonzero(~after)
    return int(after.shape[0] if unsure.size == 0 else after.shape[0] - 1 - unsure[-1])


def cut_point(utt: Utterance, rate: int) -> int:
    """Where to cut an over-long utterance: its quietest 20 ms in the last second (of ``rate`` Hz
    audio), after its committed frames."""
    lo = max(utt.samples - rate, utt.committed_frames * utt.grid.frame_samples)
    return lo + quietest_point(utt.audio[lo:], rate // 50)


class Endpointer:
    """One utterance's endpointing state: the speech gate fed its audio, and the blank-run verdict
    of its latest window.

    ``new_gate`` makes a fresh gate per utterance; ``frame_samples`` is the model's output frame
    in samples (for blank runs in seconds).
    """

    def __init__(
        self,
        new_gate: Callable[[], SpeechGate],
        rate: int,
        frame_samples: int,
        blank_id: int,
        silence_ms: int,
        max_utterance_s: float,
    ) -> None:
        self._new_gate = new_gate
        self.rate = rate
        self.frame_samples = frame_samples
        self.blank_id = blank_id
        self.silence_ms = silence_ms
        self.max_utterance_s = max_utterance_s
        self._gate = new_gate()
        self._blank_endpoint = False

    @property
    def heard_speech(self) -> bool:
        """Whether the utterance holds speech yet (before it, only preroll is kept)."""
        return self._gate.heard_speech

    def feed(self, samples: np.ndarray) -> None:
        """The utterance's next audio, for the speech gate."""
        self._gate.feed(samples)

    def speech_in_last(self, samples: int) -> bool:
        """Whether the last ``samples`` of the utterance hold speech."""
        return self._gate.heard_speech and self._gate.trailing_silence < samples

    def observe(self, log_probs: np.ndarray) -> None:
        """The latest window's view of the utterance, (frames, vocab) log-probs from its start."""
        frames_per_s = self.rate / self.frame_samples
        self._blank_endpoint = blank_run(log_probs, self.blank_id) >= self.silence_ms / 1000 * frames_per_s

    def due(self) -> bool:
        """Whether the utterance has ended: speech, then ``silence_ms`` of silence or blanks."""
        silence = self.silence_ms * self.rate // 1000
        return self._gate.heard_speech and (self._blank_endpoint or self._gate.trailing_silence >= silence)

    def too_long(self, samples: int) -> bool:
        """Whether an utterance of ``samples`` must be cut (:func:`cut_point`)."""
        return samples >= self.max_utterance_s * self.rate

    def reset(self) -> None:
        """A new utterance begins: a fresh gate, no blank run."""
        self._gate = self._new_gate()
        self._blank_endpoint = False
