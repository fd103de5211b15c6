"""``asr-client``: transcribe or stream an audio file with a running server.

asr-client transcribe talk.mp3
asr-client stream talk.wav --realtime
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any

import httpx

from app.client import AsrClient, StreamError


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="asr-client", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the server's JSON instead of text")
    parser.add_argument("--api-key", help="the server's API key (default: the ASR_API_KEY environment variable)")
    commands = parser.add_subparsers(dest="command", required=True)
    transcribe = commands.add_parser("transcribe", help="upload a file to POST /transcribe")
    transcribe.add_argument("file")
    stream = commands.add_parser("stream", help="stream a file over WS /stream, showing partials and finals")
    stream.add_argument("file")
    stream.add_argument("--realtime", action="store_true", help="send the audio at its own pace, like a microphone")
    stream.add_argument("--chunk-ms", type=int, default=100, help="audio per message (default: %(default)s)")
    return parser.parse_args(argv)


def run_transcribe(client: AsrClient, args: argparse.Namespace) -> None:
    body = client.transcribe(args.file)
    print(json.dumps(body, indent=2) if args.json else body["text"])


def run_stream(client: AsrClient, args: argparse.Namespace) -> None:
    show_partials = sys.stderr.isatty() and not args.json

    def on_message(message: dict[str, Any]) -> None:
        if args.json:
            print(json.dumps(message), flush=True)
        elif message["type"] == "partial" and show_partials:
            print(f"\r\033[K… {message['text']}", end="", file=sys.stderr, flush=True)
        elif message["type"] == "final":
            if show_partials:
                print("\r\033[K", end="", file=sys.stderr)
            print(f"[{message['start']:7.2f} - {message['end']:7.2f}] {message['text']}", flush=True)

    asyncio.run(client.stream_file(args.file, realtime=args.realtime, chunk_ms=args.chunk_ms, on_message=on_message))


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``asr-client``; exits 1 with a message on any failure."""
    args = parse_args(argv)
    client = AsrClient(args.url, api_key=args.api_key or os.environ.get("ASR_API_KEY"))
    try:
        (run_transcribe if args.command == "transcribe" else run_stream)(client, args)
    except httpx.HTTPStatusError as exc:
        sys.exit(f"asr-client: {exc.response.status_code}: {_error_message(exc.response)}")
    except (httpx.HTTPError, OSError, StreamError) as exc:
        sys.exit(f"asr-client: {exc}")


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


if __name__ == "__main__":
    main()
