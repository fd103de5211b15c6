#!/usr/bin/env bash
# Rehearse the image without a Docker engine: run the Dockerfile's install step, verbatim, in a
# fresh virtualenv over the build context that .dockerignore lets through; stage the files the
# image ships with the image's permissions; then serve them as an unprivileged user with the
# image's environment, and check the health check, the curl demos and a clean SIGTERM exit.
#
#   deploy/docker/rehearse-build.sh            (make rehearse-image; the CPU image's slim install)
#
# What this cannot show: the base image's contents and a read-only root filesystem.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
WORK="${REHEARSAL_DIR:-$ROOT/build/image-rehearsal}"
PORT="${PORT:-18000}"
RUN_AS="${RUN_AS:-nobody}"  # an unprivileged user; setpriv execs, so signals reach the server
# A Python 3.11 that RUN_AS can execute (the venv links to it), as the image's /usr/local/bin one.
PYTHON="${PYTHON:-$(command -v /usr/bin/python3.11 || command -v python3.11)}"

log() { echo "rehearse-build: $*"; }
as_user() { setpriv --reuid="$RUN_AS" --regid="$(id -g "$RUN_AS")" --clear-groups "$@"; }

as_user "$PYTHON" -c "" || { echo "$RUN_AS cannot run $PYTHON; set PYTHON to another Python 3.11" >&2; exit 1; }

# 1. The build context: the allow-list of .dockerignore, without caches.
rm -rf "$WORK"
mkdir -p "$WORK/context" "$WORK/opt/asr"
while read -r allowed; do
  (cd "$ROOT" && cp -r --parents "$allowed" "$WORK/context/")
done < <(sed -n 's/^!\(.*\)$/\1/p' "$ROOT/.dockerignore" | sed 's:/$::')
find "$WORK/context" \( -name __pycache__ -o -name '*.pyc' \) -prune -exec rm -rf {} +
log "build context: $(cd "$WORK/context" && find . -type f | wc -l) files"

# 2. The builder stage's install step (the first; the CUDA builder adds PyTorch after it), taken
#    from the Dockerfile so the two cannot drift apart.
install_step="$(sed -n 's/^RUN \(pip install .*-c requirements\.lock .*\)$/\1/p' "$ROOT/Dockerfile" | head -n 1)"
[ -n "$install_step" ] || { echo "no 'RUN pip install -c requirements.lock' step in the Dockerfile" >&2; exit 1; }
"$PYTHON" -m venv "$WORK/opt/venv"
log "in the context: $install_step"
(cd "$WORK/context" && PATH="$WORK/opt/venv/bin:$PATH" PIP_DISABLE_PIP_VERSION_CHECK=1 bash -c "$install_step")
log "the image's venv: $(du -sm "$WORK/opt/venv" | cut -f1) MB; PyTorch $("$WORK/opt/venv/bin/python" -c 'import importlib.util as u; print("absent" if u.find_spec("torch") is None else "present")')"

# 3. What the runtime stage copies to /opt/asr, with the Dockerfile's permissions.
cp -r "$WORK/context/models" "$WORK/opt/asr/models"
cp "$WORK/context/deploy/docker/healthcheck.py" "$WORK/opt/asr/healthcheck.py"
chmod -R u=rwX,go=rX "$WORK/opt/asr"
chmod -R go+rX "$WORK"

# 4. Serve as an unprivileged user with the runtime stage's environment (ASR_DEVICE as the cpu target).
log "serving as $RUN_AS on port $PORT"
cd "$WORK/opt/asr"
# A plain command, not a function, so that $! is the server's own PID (setpriv and env exec).
setpriv --reuid="$RUN_AS" --regid="$(id -g "$RUN_AS")" --clear-groups \
  env -i PATH="$WORK/opt/venv/bin:/usr/bin:/bin" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 \
  HOME=/tmp XDG_CACHE_HOME=/tmp/.cache ASR_HOST=127.0.0.1 ASR_PORT="$PORT" \
  ASR_MODEL_PATH="$WORK/opt/asr/models/en-whisper-tiny" ASR_DEVICE=cpu \
  asr-serve >"$WORK/server.log" 2>&1 &
server=$!
trap 'kill "$server" 2>/dev/null || true' EXIT

for _ in $(seq 1 120); do
  if ASR_PORT="$PORT" "$WORK/opt/venv/bin/python" healthcheck.py; then break; fi
  kill -0 "$server" 2>/dev/null || { cat "$WORK/server.log"; exit 1; }
  sleep 1
done
ASR_PORT="$PORT" "$WORK/opt/venv/bin/python" healthcheck.py || { echo "never became ready" >&2; exit 1; }
log "healthcheck.py: ready"

"$WORK/opt/venv/bin/python" - "$WORK/sample.wav" <<'PYEOF'
import math, struct, sys, wave

with wave.open(sys.argv[1], "wb") as out:
    out.setnchannels(1)
    out.setsampwidth(2)
    out.setframerate(16000)
    out.writeframes(b"".join(struct.pack("<h", int(8000 * math.sin(i / 10))) for i in range(32000)))
PYEOF
BASE_URL="http://127.0.0.1:$PORT" "$ROOT/scripts/demo.sh" "$WORK/sample.wav"

kill -TERM "$server"
status=0
wait "$server" || status=$?
trap - EXIT
[ "$status" -eq 0 ] || { echo "the server exited $status after SIGTERM" >&2; tail -20 "$WORK/server.log"; exit 1; }
log "SIGTERM: exited 0"
log "the image's install step, files and entry point work"
