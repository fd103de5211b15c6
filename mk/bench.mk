# Benchmarks (included by the Makefile, which defines PY). Results: JSON under bench/results/
# (git-ignored) and the figures in docs/benchmarks.md. On a shared CPU, compare the ratios of one run.
#   bench        ceiling, ours batching on/off, LitServe and a naive server in one run (about 9 minutes)
#   bench-long   a one-hour recording through our server: transcription time and peak memory
#   bench-frontend  the log-mel frontend per clip, with and without the allocator tuning
#   bench-peers  WER (cv100, speechocean762 test) and single-stream speed of faster-whisper and pocketsphinx
# Extra arguments go through BENCH_ARGS, e.g. `make bench BENCH_ARGS="--rounds 5"`.
BENCH_ARGS ?=

.PHONY: bench bench-long bench-frontend bench-peers bench-workload bench-deps

bench-deps: install
	@$(PY) -c "import litserve, psutil" 2>/dev/null || { \
		echo "bench: the harness needs litserve and psutil in $(VENV)"; exit 1; }

bench-workload: bench-deps ## the cached mixed-length workload (espeak-ng speech, 1-30 s clips)
	$(PY) -m bench.workload

bench: bench-workload ## throughput and latency against the offline ceiling and the peers
	$(PY) -m bench.compare $(BENCH_ARGS)

bench-long: bench-workload ## one hour in one request: time and peak RSS
	$(PY) -m bench.long_audio $(BENCH_ARGS)

bench-frontend: install ## the log-mel frontend's time per clip, glibc's default allocator against ASR_TUNE_MALLOC
	$(PY) -m bench.frontend $(BENCH_ARGS)

bench-peers: install ## WER and single-stream speed of the peer recognisers, one normaliser (e.g. BENCH_ARGS="--limit 20")
	$(PY) -m bench.peers_accuracy $(BENCH_ARGS)
