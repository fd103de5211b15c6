"""Whisper's byte-level BPE tokenizer (``tokenizer.json`` of the base package) and its decoding rules."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from app.asr.whisper.base import package_config

MAX_PROMPT_TOKENS = 128
"""Tokens of a request's prompt the decoder reads (its last ones): with the longest piece's cap of new
tokens (``token_caps`` of 25 s) they fit the decoder's 448 positions."""


@dataclass(frozen=True)
class DecodingRules:
    """Whisper's prompt and token suppression for greedy decoding without timestamps."""

    prompt: tuple[int, ...]  # start-of-transcript, no-timestamps (after a previous text, if any)
    end_of_text: int
    suppress: tuple[int, ...]  # never emitted (special and timestamp tokens, Whisper's suppress list)
    suppress_first: tuple[int, ...]  # not as the first token (a blank, end-of-text)
    max_tokens: int  # the decoder's positions, prompt included


class WhisperTokenizer:
    """Token ids to text, and the special tokens that greedy decoding needs."""

    def __init__(self, model_file: Path) -> None:
        from tokenizers import Tokenizer

        path = model_file.parent / "tokenizer.json"
        if not path.is_file():
            raise FileNotFoundError(f"no tokenizer.json beside {model_file}")
        self._tokenizer = Tokenizer.from_file(str(path))
        self._config = package_config(model_file)
        self.end_of_text = self._special("<|endoftext|>")
        self.start_of_transcript = self._special("<|startoftranscript|>")
        self.no_timestamps = self._special("<|notimestamps|>")
        self.start_of_previous = self._special("<|startofprev|>")

    def _special(self, token: str) -> int:
        token_id = self._tokenizer.token_to_id(token)
        if token_id is None:
            raise ValueError(f"the tokenizer has no {token}")
        return int(token_id)

    def decode(self, ids: list[int]) -> str:
        """The text of ordinary tokens (special ones dropped), without the leading space."""
        return self._tokenizer.decode([i for i in ids if i < self.end_of_text]).strip()

    def encode(self, text: str) -> list[int]:
        """The ordinary tokens of ``text`` (no special ones; Whisper's texts start with a space)."""
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def token_texts(self) -> list[str]:
        """The text of each ordinary token, by id (a token of part of a character reads as U+FFFD)."""
        return [self._tokenizer.decode([i]) for i in range(self.end_of_text)]

    def rules(self, vocab_size: int, max_tokens: int) -> DecodingRules:
        """Greedy decoding without timestamps, as Whisper does for English-only models."""
        specials = range(self.end_of_text + 1, vocab_size)  # task, language and timestamp tokens
        suppress = sorted({*self._config.get("suppress_ids", []), *specials} - {self.end_of_text})
        first = self._config.get("suppress_ids_begin", [self._tokenizer.token_to_id(" "), self.end_of_text])
        return DecodingRules(
            prompt=(self.start_of_transcript, self.no_timestamps),
            end_of_text=self.end_of_text,
            suppress=tuple(suppress),
            suppress_first=tuple(int(i) for i in first),
            max_tokens=max_tokens,
        )

    def prompted(self, rules: DecodingRules, text: str) -> DecodingRules:
        """``rules`` with ``text`` (a request's prompt) as the previous text the decoder reads first,
        as Whisper conditions on earlier text: it takes up the spellings of names and terms and the
        style there. At most the last :data:`MAX_PROMPT_TOKENS` ordinary tokens (special ones a text
        spells, such as ``<|endoftext|>``, are left out); no text, no change."""
        ordinary = [t for t in self.encode(" " + text.strip()) if t < self.end_of_text] if text.strip() else []
        tokens = ordinary[-MAX_PROMPT_TOKENS:]
        if not tokens:
            return rules
        return replace(rules, prompt=(self.start_of_previous, *tokens, *rules.prompt))
