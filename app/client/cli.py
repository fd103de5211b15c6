"""``asr-client``: transcribe or stream audio files with a running server.

asr-client transcribe talk.mp3                       # the text on stdout
asr-client transcribe *.mp3 --format srt,txt         # talk.srt and talk.txt next to each input
asr-client stream talk.wav --realtime
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

import av
import httpx

from app.client import AsrClient, StreamError
from app.client.batch import BatchTranscriber, plan, probe_seconds, write_outputs
from app.client.outputs import FORMATS, render
from app.client.progress import ProgressBar


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="asr-client", description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000", help="the server (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the server's JSON instead of text")
    parser.add_argument("--api-key", help="the server's API key (default: the ASR_API_KEY environment variable)")
    commands = parser.add_subparsers(dest="command", required=True)
    transcribe = commands.add_parser(
        "transcribe", help="transcribe files through POST /transcribe, with a progress bar on stderr"
    )
    transcribe.add_argument("files", nargs="+", metavar="file")
    transcribe.add_argument(
        "--format",
        type=_formats,
        default=(),
        help=f"write FILE.<fmt> next to each input: {','.join(FORMATS)} (comma-separated; default: print the text)",
    )
    transcribe.add_argument("--force", action="store_true", help="overwrite outputs that exist (default: skip)")
    transcribe.add_argument("--jobs", type=int, default=2, help="requests in flight at once (default: %(default)s)")
    transcribe.add_argument(
        "--piece-seconds", type=float, default=60.0, help="long files go in pieces of about this (default: %(default)s)"
    )
    transcribe.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None, help="the bar (default: on a terminal)"
    )
    stream = commands.add_parser("stream", help="stream a file over WS /stream, showing partials and finals")
    stream.add_argument("file")
    stream.add_argument("--realtime", action="store_true", help="send the audio at its own pace, like a microphone")
    stream.add_argument("--chunk-ms", type=int, default=100, help="audio per message (default: %(default)s)")
    return parser.parse_args(argv)


def _formats(value: str) -> tuple[str, ...]:
    formats = tuple(dict.fromkeys(f.strip().lower() for f in value.split(",") if f.strip()))
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise argparse.ArgumentTypeError(f"unknown format {','.join(unknown)!r}: use {', '.join(FORMATS)}")
    return formats


def run_transcribe(client: AsrClient, args: argparse.Namespace) -> list[str]:
    """Transcribe every file; what went wrong with those that failed (the rest go on)."""
    show = sys.stderr.isatty() if args.progress is None else args.progress
    estimates = {name: probe_seconds(Path(name)) for name in args.files}
    bar = ProgressBar(sum(estimates.values()), len(args.files), show)
    jobs = plan(args.files, args.format, args.force, bar.note)
    bar.grow(-sum(estimates[name] for name in args.files if name not in {str(j.path) for j in jobs}))
    batch = BatchTranscriber(client, bar, jobs=max(1, args.jobs), piece_s=max(5.0, args.piece_seconds))
    failures: list[str] = []
    try:
        running = [(job, batch.submit(job, estimates[str(job.path)])) for job in jobs]
        for job, future in running:
            try:
                transcript = future.result()
            except (httpx.HTTPError, OSError, av.error.FFmpegError, ValueError) as exc:
                failures.append(f"asr-client: {job.path}: {_describe(exc)}")
                if len(args.files) > 1:
                    bar.note(failures[-1])
                continue
            bar.file_done()
            if job.targets:
                write_outputs(transcript, job.targets)
            else:
                prefix = f"{job.path}: " if len(args.files) > 1 else ""
                print(prefix + (render(transcript, "json").rstrip() if args.json else transcript.text), flush=True)
    finally:
        batch.close()
        bar.close()
    return failures


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
    if args.command == "transcribe":
        failed = run_transcribe(client, args)
        if len(args.files) == 1 and failed:
            sys.exit(failed[0])
        if failed:
            sys.exit(f"asr-client: {len(failed)} of {len(args.files)} files failed")
        return
    try:
        run_stream(client, args)
    except (httpx.HTTPError, OSError, StreamError) as exc:
        sys.exit(f"asr-client: {_describe(exc)}")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, httpx.HTTPStatusError):
        return f"{exc.response.status_code}: {_error_message(exc.response)}"
    if isinstance(exc, av.error.FFmpegError):
        return f"cannot read the audio ({exc.strerror or exc})"
    return str(exc)


def _error_message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:200]


if __name__ == "__main__":
    main()
