# syntax=docker/dockerfile:1
#
# Speech-to-text service image. Two targets share every layer except their defaults:
#
#   docker build --target cpu  -t asr-service:cpu  .    (the default target)
#   docker build --target cuda -t asr-service:cuda .    (run with --gpus all)
#
# Python packages come from the same pinned list as `make run` (`pip install -c requirements.lock`),
# installed as a regular package without the test extras. The CPU image is the slim install: ONNX
# Runtime and NumPy, no PyTorch. The CUDA image adds the `torch` extra; the pinned torch wheel
# from PyPI carries its CUDA libraries, so it needs only the host's NVIDIA driver (NVIDIA
# Container Toolkit), not a CUDA base image.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------------------------------------
# builder: a virtual environment at /opt/venv holding the service and its pinned dependencies
# (the slim set; Silero VAD's wheel without the torch it declares: its ONNX file needs none).
FROM ${PYTHON_IMAGE} AS builder

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml requirements.lock README.md ./
COPY app ./app
RUN pip install --no-cache-dir -c requirements.lock . && pip install --no-cache-dir --no-deps -c requirements.lock silero-vad

# Files the runtime image ships, made world-readable whatever their mode in the checkout
# (the server runs as an unprivileged user).
COPY models/en-whisper-tiny /stage/models/en-whisper-tiny
COPY deploy/docker/healthcheck.py /stage/healthcheck.py
RUN chmod -R u=rwX,go=rX /stage

# builder-cuda: the same venv with PyTorch added (the `torch` extra).
FROM builder AS builder-cuda
RUN pip install --no-cache-dir -c requirements.lock ".[torch]"

# ---------------------------------------------------------------------------------------------
# runtime: the venv, the default model bundle and a non-root user; no compilers, no pip cache.
# The targets below copy their builder's venv: cpu the slim one, cuda the one with PyTorch.
FROM ${PYTHON_IMAGE} AS runtime-base

ARG UID=10001
RUN groupadd --system --gid ${UID} asr \
    && useradd --system --uid ${UID} --gid asr --home-dir /opt/asr --no-create-home --shell /usr/sbin/nologin asr

COPY --from=builder /stage /opt/asr
WORKDIR /opt/asr

# Everything the process writes goes to /tmp, so the root filesystem can be mounted read-only.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    ASR_HOST=0.0.0.0 \
    ASR_PORT=8000 \
    ASR_MODEL_PATH=/opt/asr/models/en-whisper-tiny

USER ${UID}:${UID}
EXPOSE 8000

# /readyz: 200 once the model is loaded and warm, 503 while loading and while draining.
HEALTHCHECK --interval=10s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "/opt/asr/healthcheck.py"]

# Exec form: the server is PID 1's only process and receives SIGTERM itself, then drains
# in-flight requests and streams within ASR_SHUTDOWN_GRACE_S before exiting.
STOPSIGNAL SIGTERM
ENTRYPOINT ["asr-serve"]

# ---------------------------------------------------------------------------------------------
FROM runtime-base AS cuda
COPY --from=builder-cuda /opt/venv /opt/venv
ENV ASR_DEVICE=cuda \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility

# ---------------------------------------------------------------------------------------------
# Last stage: what a plain `docker build .` produces.
FROM runtime-base AS cpu
COPY --from=builder /opt/venv /opt/venv
ENV ASR_DEVICE=cpu
