# The beam decoder's word language model (see scripts/build_lm.py and app/asr/beam.py).
# Included by the main Makefile, which defines PY (the virtualenv's python).
#   kenlm     build KenLM's lmplz and build_binary into $(KENLM_DIR) (CMake + Debian Boost; a few minutes)
#   lm        estimate the pruned n-gram LM from the data recipe's text (held-out sentences excluded)
#             and write $(LM_DIR)/lm.bin, lexicon.txt and card.json; with LM_BASE=pocketsphinx, mix it
#             with CMU's general English LM first (weight chosen on the sentences of LM_DEV) and prune
#             the mixture to LM_MAX_NGRAMS n-grams (measured, not shipped: docs/decoding.md)
#   lm-tune   grid-search lm_weight and word_score on the dev sets (LM_DEV) with the model in
#             LM_MODEL, then narrow the search (beam size, tokens tried per frame, score threshold),
#             and write $(LM_DIR)/decoder.json (the served defaults)
#   bench-beam  WER greedy vs beam+LM on the test sets, and served throughput at concurrency 16

KENLM_DIR ?= build/kenlm
LM_MODEL ?= models/en-whisper-tiny
LM_DIR ?= $(LM_MODEL)/lm
LM_ORDER ?= 4
LM_PRUNE ?= 0 0 1 1
LM_BASE ?= none
LM_MAX_NGRAMS ?= 1600000
LM_DEV ?= data/manifests/synth_dev.jsonl data/manifests/so762_dev.jsonl data/manifests/piper_dev.jsonl
SPEECHOCEAN ?= ../shared/data/speechocean762

.PHONY: kenlm lm lm-tune bench-beam

$(KENLM_DIR)/bin/lmplz $(KENLM_DIR)/bin/build_binary:
	PY=$(PY) KENLM_DIR=$(KENLM_DIR) scripts/install-kenlm.sh

kenlm: $(KENLM_DIR)/bin/lmplz

lm: install $(KENLM_DIR)/bin/lmplz
	$(PY) scripts/build_lm.py --out $(LM_DIR) --kenlm $(KENLM_DIR)/bin --speechocean $(SPEECHOCEAN) \
		--order $(LM_ORDER) --prune $(LM_PRUNE) --base-lm $(LM_BASE) --max-ngrams $(LM_MAX_NGRAMS) \
		--dev-manifest $(LM_DEV)

lm-tune: install
	$(PY) bench/beam_vs_greedy.py tune --model $(LM_MODEL) --lm $(LM_DIR) --dev $(LM_DEV)

bench-beam: install
	$(PY) bench/beam_vs_greedy.py wer --model $(LM_MODEL) --lm $(LM_DIR) --speechocean $(SPEECHOCEAN) \
		--synth data/manifests/synth_test.jsonl
	$(PY) bench/beam_vs_greedy.py throughput --model $(LM_MODEL) --concurrency 16
