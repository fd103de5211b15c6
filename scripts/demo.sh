#!/usr/bin/env bash
# The README's curl examples, run against a live server. Exits non-zero if any request fails.
#
#   scripts/demo.sh AUDIO.wav                     # server at http://127.0.0.1:8000
#   BASE_URL=http://asr.example.com scripts/demo.sh AUDIO.wav
#
# AUDIO.wav: a PCM WAV file (any rate and channel count); the raw-PCM demo sends its samples
# without the header, so it needs 16-bit samples. Needs curl, and python3 to strip the WAV header.
set -euo pipefail

BASE_URL="${BASE_URL:-http://127.0.0.1:8000}"
BASE_URL="${BASE_URL%/}"
PYTHON="${PYTHON:-python3}"

if [ $# -ne 1 ] || [ ! -f "$1" ]; then
  echo "usage: [BASE_URL=http://host:port] $0 AUDIO.wav" >&2
  exit 2
fi
AUDIO="$1"

# --fail-with-body: an HTTP error status fails the request and still prints the error body.
CURL=(curl --silent --show-error --fail-with-body --max-time 120)

step() { printf '\n== %s\n' "$*"; }

step "liveness: GET /healthz"
"${CURL[@]}" "$BASE_URL/healthz"; echo

step "readiness: GET /readyz (503 while loading or draining)"
"${CURL[@]}" "$BASE_URL/readyz"; echo

step "the served model: GET /v1/models"
"${CURL[@]}" "$BASE_URL/v1/models"; echo

step "multipart upload: POST /transcribe -F file=@$AUDIO"
"${CURL[@]}" -F "file=@$AUDIO" "$BASE_URL/transcribe"; echo

step "raw body: POST /transcribe with Content-Type: audio/wav"
"${CURL[@]}" -H "Content-Type: audio/wav" --data-binary "@$AUDIO" "$BASE_URL/transcribe"; echo

step "raw 16-bit PCM: POST /transcribe with Content-Type: audio/pcm;rate=RATE;channels=N"
pcm="$(mktemp)"
trap 'rm -f "$pcm"' EXIT
format="$("$PYTHON" - "$AUDIO" "$pcm" <<'PYEOF'
import sys
import wave

with wave.open(sys.argv[1], "rb") as wav:
    if wav.getsampwidth() != 2:
        sys.exit(f"{sys.argv[1]}: the raw PCM demo needs 16-bit samples, got {8 * wav.getsampwidth()}-bit")
    frames = wav.readframes(wav.getnframes())
    print(f"rate={wav.getframerate()};channels={wav.getnchannels()}")
with open(sys.argv[2], "wb") as out:
    out.write(frames)
PYEOF
)"
"${CURL[@]}" -H "Content-Type: audio/pcm;$format" --data-binary "@$pcm" "$BASE_URL/transcribe"; echo

step "the same PCM with the rate as a query parameter: POST /transcribe?sample_rate=RATE"
rate="${format#rate=}"; rate="${rate%%;*}"
channels="${format##*channels=}"
"${CURL[@]}" -H "Content-Type: audio/pcm;channels=$channels" --data-binary "@$pcm" \
  "$BASE_URL/transcribe?sample_rate=$rate"; echo

step "OpenAI-compatible: POST /v1/audio/transcriptions -F file=@$AUDIO -F model=whisper-1"
"${CURL[@]}" -F "file=@$AUDIO" -F model=whisper-1 "$BASE_URL/v1/audio/transcriptions"; echo

step "Prometheus metrics: GET /metrics (asr_* lines)"
metrics="$("${CURL[@]}" "$BASE_URL/metrics")"
grep '^asr_' <<<"$metrics" | grep -E '^asr_(model_ready|audio_processed_seconds_total|http_requests_total)' || {
  echo "no asr_* metrics in /metrics" >&2
  exit 1
}

printf '\nall demo requests succeeded against %s\n' "$BASE_URL"
