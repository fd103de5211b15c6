"""Whisper's pretrained text decoder with a key/value cache, and batched greedy decoding.

It reads the encoder states the CTC path already computed (at the utterance's own length) and
writes Whisper's tokens. Rows of a batch decode side by side; each stops at end-of-text.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from app.asr.whisper.greedy import GreedyRows, TokenSearch, TopTokens, moves
from app.asr.whisper.layers import Attention, KeyValue, Mlp
from app.asr.whisper.tokenizer import DecodingRules


class DecoderBlock(nn.Module):
    """Causal self-attention, cross-attention to the encoder states, MLP; each pre-norm."""

    def __init__(self, d_model: int, heads: int) -> None:
        super().__init__()
        self.attn_ln = nn.LayerNorm(d_model)
        self.attn = Attention(d_model, heads)
        self.cross_attn_ln = nn.LayerNorm(d_model)
        self.cross_attn = Attention(d_model, heads, cross=True)
        self.mlp_ln = nn.LayerNorm(d_model)
        self.mlp = Mlp(d_model)

    def forward(
        self, x: Tensor, cache: KeyValue | None, cross: KeyValue, cross_mask: Tensor | None
    ) -> tuple[Tensor, KeyValue]:
        attended, cache = self.attn(self.attn_ln(x), cache=cache, causal=x.shape[1] > 1)
        x = x + attended
        x = x + self.cross_attn(self.cross_attn_ln(x), cross_mask, cache=cross)[0]
        return x + self.mlp(self.mlp_ln(x)), cache


class WhisperDecoder(nn.Module):
    """Tokens in, next-token logits out, attending to encoder states."""

    def __init__(self, vocab_size: int, d_model: int, heads: int, layers: int, max_tokens: int) -> None:
        super().__init__()
        self.token_embedding = nn.Embedding(vocab_size, d_model)
        self.positions = nn.Parameter(torch.zeros(max_tokens, d_model), requires_grad=False)
        self.blocks = nn.ModuleList(DecoderBlock(d_model, heads) for _ in range(layers))
        self.ln = nn.LayerNorm(d_model)

    def cross_keys(self, states: Tensor) -> list[KeyValue]:
        """Each block's cross-attention keys and values of ``states`` (batch, frames, d_model)."""
        blocks: list[DecoderBlock] = list(self.blocks)  # type: ignore[arg-type]
        return [block.cross_attn.project_key_value(states) for block in blocks]

    def forward(
        self, tokens: Tensor, caches: list[KeyValue] | None, cross: list[KeyValue], cross_mask: Tensor | None
    ) -> tuple[Tensor, list[KeyValue]]:
        """Logits (batch, tokens, vocab) of the next token after each of ``tokens`` (batch, n).

        ``caches`` holds the self-attention keys and values of the earlier positions (None at
        the start); the updated caches are returned.
        """
        offset = 0 if caches is None else caches[0][0].shape[2]
        x = self.token_embedding(tokens) + self.positions[offset : offset + tokens.shape[1]]
        new_caches = []
        for i, block in enumerate(self.blocks):
            x, cache = block(x, None if caches is None else caches[i], cross[i], cross_mask)
            new_caches.append(cache)
        logits = self.ln(x) @ self.token_embedding.weight.T
        return logits.float(), new_caches

    def greedy(
        self, states: Tensor, lengths: Tensor, rules: DecodingRules, max_new: Sequence[int] | None = None
    ) -> list[list[int]]:
        """Greedy text tokens (prompt and end-of-text removed) for each row of ``states``.

        Args:
            states: (batch, frames, d_model) encoder output, rows padded past ``lengths``.
            lengths: (batch,) valid frames per row.
            max_new: per-row cap on new tokens (default: as many as the positions allow).
        """
        return self.decode(states, lengths, rules, GreedyRows(rules, states.shape[0], max_new))

    @torch.inference_mode()
    def decode(self, states: Tensor, lengths: Tensor, rules: DecodingRules, search: TokenSearch) -> list[list[int]]:
        """Each row's text tokens as ``search`` chooses them (greedy decoding or the joint beam
        search) on ``states`` (rows, frames, d_model), rows padded past ``lengths``; each step the
        decoder runs the sequences of the rows still running, a row's beams reading that row's
        states. The same steps as the NumPy decoder's (``app.asr.slim.second_pass``)."""
        mask = None
        if states.shape[0] > 1 and bool((lengths < states.shape[1]).any()):
            mask = (torch.arange(states.shape[1], device=lengths.device)[None, :] < lengths[:, None])[:, None, None, :]
        running = search.running
        cross, mask = _shrink(self.cross_keys(states), mask, list(range(states.shape[0])), running)
        suppress = torch.tensor(rules.suppress, device=states.device)
        tokens = torch.tensor([rules.prompt] * search.sequences, device=states.device)
        caches: list[KeyValue] | None = None
        while not search.finished:
            logits, caches = self(tokens, caches, cross, mask)
            last = logits[:, -1]
            last[:, suppress] = -torch.inf
            if search.step == 0:
                last[:, list(rules.suppress_first)] = -torch.inf
            log_probs = torch.log_softmax(last.float(), dim=-1)
            values, chosen = log_probs.topk(min(search.candidates, log_probs.shape[-1]), dim=-1)
            end = log_probs[:, rules.end_of_text]
            parents, inputs = search.advance(TopTokens(*(t.cpu().numpy() for t in (chosen, values, end))))
            if search.running != running:  # rows done leave the batch
                cross, mask = _shrink(cross, mask, running, search.running)
                running = search.running
            order = torch.from_numpy(parents).to(states.device)
            caches = [(k.index_select(0, order), v.index_select(0, order)) for k, v in caches]
            tokens = torch.from_numpy(inputs).to(states.device)[:, None]
        return search.best()


def _shrink(
    cross: list[KeyValue], mask: Tensor | None, before: list[int], after: list[int]
) -> tuple[list[KeyValue], Tensor | None]:
    """The keys, values and key mask of rows ``after``, shrunk in place from those of rows
    ``before`` (``app.asr.whisper.greedy.shrink``): only the rows that move are copied."""
    tensors = [t for pair in cross for t in pair] + ([mask] if mask is not None else [])
    for place, source in moves(before, after):
        for tensor in tensors:
            tensor[place] = tensor[source]
    n = len(after)
    return [(k[:n], v[:n]) for k, v in cross], mask[:n] if mask is not None else None
