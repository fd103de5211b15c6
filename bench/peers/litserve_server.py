"""The same model behind LitServe, with LitServe's dynamic batching on.

Its worker decodes each upload with ``app.asr.audio.decode_audio`` (``decode_request``), and
``predict`` runs the same recognizer and greedy decoder on the whole batch. The batch limits
match our server's defaults (16 utterances, 5 ms wait) and so does the request timeout.

    python -m bench.peers.litserve_server --port 8002
"""

# No ``from __future__ import annotations`` here: LitServe reads ``decode_request``'s parameter
# annotation at run time to decide how to parse the body (none: a form for multipart uploads).

import time
from pathlib import Path
from typing import Any

import litserve as ls
import numpy as np
from fastapi import HTTPException

from app.asr.audio import AudioError, decode_audio
from app.asr.ctc import Hypothesis
from bench.peers.common import arguments, transcription
from bench.recognizers import greedy_decoder, make_recognizer, warm_up


class TranscribeAPI(ls.LitAPI):
    """POST /transcribe with a multipart ``file``; answers the same JSON as our server."""

    def __init__(self, model: Path, runtime: str, precision: str, max_batch_size: int, batch_timeout: float) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout, api_path="/transcribe")
        self.model_path, self.runtime, self.precision = model, runtime, precision

    def setup(self, device: str) -> None:
        self.recognizer = make_recognizer(self.model_path, self.runtime, self.precision)
        warm_up(self.recognizer)
        self.decoder = greedy_decoder(self.recognizer)
        self.rate = self.recognizer.config.sample_rate

    def decode_request(self, request):  # type: ignore[no-untyped-def]  # a form; see the note above
        upload = request["file"]
        try:
            return decode_audio(upload.file.read(), self.rate)
        except AudioError as exc:
            raise HTTPException(400, exc.code) from exc

    def batch(self, inputs: list[np.ndarray]) -> list[np.ndarray]:
        return list(inputs)  # different lengths: the recognizer pads them itself

    def predict(self, x: list[np.ndarray]) -> list[dict[str, Any]]:
        started = time.perf_counter()
        hyps: list[Hypothesis] = [self.decoder.decode(lp) for lp in self.recognizer.infer(x)]
        ms = (time.perf_counter() - started) * 1e3
        name = self.recognizer.config.name
        return [transcription(h, a.shape[0] / self.rate, name, ms) for h, a in zip(hyps, x, strict=True)]

    def unbatch(self, output: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return output

    def encode_response(self, output: dict[str, Any]) -> dict[str, Any]:
        return output


def main() -> None:
    parser = arguments(__doc__)
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--batch-timeout", type=float, default=0.005, help="seconds")
    parser.add_argument("--timeout", type=float, default=120.0, help="request timeout in seconds")
    args = parser.parse_args()
    api = TranscribeAPI(args.model, args.runtime, args.precision, args.max_batch_size, args.batch_timeout)
    server = ls.LitServer(api, accelerator="cpu", devices=1, workers_per_device=1, timeout=args.timeout)
    server.run(host=args.host, port=args.port, generate_client_file=False, log_level="warning")


if __name__ == "__main__":
    main()
