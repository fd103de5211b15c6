# Streaming (included by the Makefile, which defines PY): the browser test of the demo page, and
# the streaming benchmarks (see docs/benchmarks.md).
#   test-browser   install Debian's chromium and Playwright for Python, then drive GET / headless
#   bench-stream   N concurrent real-time streams: partial latency and the largest N kept in real time
#   bench-stream-wer  finals of streamed utterances against offline transcription (WER)
STREAM_BENCH_MODEL ?= models/en-whisper-tiny
STREAM_BENCH_MANIFEST ?= $(firstword $(wildcard data/manifests/synth_test.jsonl) data/manifests/so762_test.jsonl)

.PHONY: browser-deps test-browser bench-stream bench-stream-wer

browser-deps: install
	PY=$(PY) scripts/install-browser.sh

test-browser: browser-deps
	$(PY) -m pytest -m browser -q tests/browser

bench-stream: install
	$(PY) -m bench.stream_load --model $(STREAM_BENCH_MODEL)

bench-stream-wer: install
	$(PY) -m bench.stream_vs_offline --model $(STREAM_BENCH_MODEL) --manifest $(STREAM_BENCH_MANIFEST)
