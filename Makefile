# otlp-stats: every target sets itself up; `make run` and `make test` work on a fresh clone.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
ARGS   ?=
COMPOSE ?= docker compose
# TARGET=host:port points the k6 targets at a running service instead of starting one.
TARGET ?=
SUDO   := $(if $(filter 0,$(shell id -u)),,sudo)

.DEFAULT_GOAL := help
.PHONY: help install run test lint unit bench clean system-deps lint-deploy e2e \
	compose-up compose-down k6-smoke k6-load k6-soak fuzz soak image-deps image image-test lock

help: ## list the targets
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

# The C wire scanner (otlp_stats/counting/_wire.c) needs xxhash.h from Debian's libxxhash-dev.
# Without it the package still installs and counts through the slower Python scanner; the tests
# say so.
$(STAMP): pyproject.toml requirements.lock setup.py otlp_stats/counting/_wire.c \
		otlp_stats/receiving/_otlp_json.c otlp_stats/patterns/_masker.c \
		otlp_stats/patterns/masker_core.h $(wildcard proto/*/*.proto)
	@if [ ! -f /usr/include/xxhash.h ]; then \
		echo "installing Debian's libxxhash-dev (xxhash.h, for the C wire scanner)"; \
		{ $(SUDO) apt-get update -qq >/dev/null && \
		  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends libxxhash-dev >/dev/null; } || \
		echo "warning: libxxhash-dev not installed; the C wire scanner will not be built"; \
	fi
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	@# The runtime dependencies exactly as the image gets them, then the package and its tools.
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet -e '.[test,lint]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install the package with test and lint tools

# pyproject.toml keeps the ranges; requirements.lock pins the runtime dependencies with their
# hashes for the image and `make install`. tests/test_lock.py fails when the two disagree.
lock: ## re-pin requirements.lock to the newest versions the ranges allow (uv, from PyPI)
	@test -x $(BIN)/uv || { $(PYTHON) -m venv $(VENV) && $(BIN)/pip install --quiet 'uv>=0.9'; }
	$(BIN)/uv pip compile pyproject.toml --universal --generate-hashes --upgrade --quiet \
		--custom-compile-command "make lock" --output-file requirements.lock

run: install ## start the service with the defaults (ARGS="--window 5" to override)
	$(BIN)/otlp-stats $(ARGS)

lint: install lint-deploy ## ruff and mypy --strict, plus lint-deploy
	$(BIN)/ruff check otlp_stats tests bench
	$(BIN)/ruff format --check otlp_stats tests bench
	$(BIN)/mypy

unit: install system-deps ## the tests alone, no lint
	$(BIN)/pytest $(ARGS)

test: install system-deps image-deps lint ## install, lint, and run every test (the image's too, where podman runs)
	$(BIN)/pytest $(ARGS)

# The image tests need a container engine: Debian's podman (with runc, and debootstrap for the
# local base image). Where it cannot be installed, the image tests skip, saying why in one line.
image-deps: ## install Debian's podman, runc and debootstrap if missing; root or sudo
	@deploy/docker/image.sh deps || \
		echo "warning: podman not installed; the image tests will be skipped"

image: image-deps ## build the image with podman on a local Debian base (IMAGE=localhost/otlp-stats:local)
	deploy/docker/image.sh build

image-test: install image-deps ## build the image and prove it by running it, alone and in compose with Prometheus
	$(BIN)/pytest tests/test_image.py tests/test_image_compose.py $(ARGS)

# Debian's prometheus package ships prometheus and promtool for the deploy tests. Where systemd
# runs, the package starts its own daemon on :9090; the tests start theirs, so it is stopped.
system-deps: ## install Debian's prometheus (prometheus, promtool), redis-server and h2load if missing; root or sudo
	@if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then \
		echo "installing Debian's prometheus package"; \
		$(SUDO) apt-get update -qq >/dev/null && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends prometheus >/dev/null && \
		if [ -d /run/systemd/system ]; then \
			$(SUDO) systemctl disable --now prometheus >/dev/null 2>&1 || true; \
		fi; \
	fi
	@# h2load (nghttp2-client): the bench's sender in C (bench/h2load_client.py, its test too).
	@if ! command -v h2load >/dev/null; then \
		echo "installing Debian's nghttp2-client package (h2load)"; \
		$(SUDO) apt-get update -qq >/dev/null && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends nghttp2-client >/dev/null; \
	fi
	@# redis-server for the replica tests (tests/support/redistools.py starts its own on a free port).
	@if ! command -v redis-server >/dev/null; then \
		echo "installing Debian's redis-server package"; \
		$(SUDO) apt-get update -qq >/dev/null && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends redis-server >/dev/null && \
		if [ -d /run/systemd/system ]; then \
			$(SUDO) systemctl disable --now redis-server >/dev/null 2>&1 || true; \
		fi; \
	fi

lint-deploy: install system-deps ## hadolint, promtool, kubernetes-validate, compose schema; ruff+mypy on k6/run.py
	$(BIN)/hadolint Dockerfile deploy/prometheus/Dockerfile
	promtool check config --lint=all deploy/prometheus/prometheus.yml >/dev/null
	cd deploy/prometheus && promtool test rules alerts.test.yml >/dev/null
	$(BIN)/kubernetes-validate --strict --quiet deploy/kubernetes/*.yaml
	$(BIN)/kubernetes-validate --strict --quiet deploy/kubernetes/replicas/*.yaml
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml \
		deploy/docker/compose.podman.yml
	$(BIN)/ruff check k6/run.py deploy/docker/healthcheck.py
	$(BIN)/ruff format --check k6/run.py deploy/docker/healthcheck.py
	$(BIN)/mypy k6/run.py deploy/docker/healthcheck.py

e2e: install system-deps ## the real service against real clients: SDKs, Prometheus, k6, the image's entry point
	$(BIN)/pytest $(wildcard tests/test_e2e_*.py) tests/test_service.py tests/test_prometheus.py \
		tests/test_k6.py tests/test_deploy_docker.py $(ARGS)

compose-up: ## build the image and start otlp-stats, Prometheus and Grafana (docker compose)
	$(COMPOSE) up --build --detach
	@echo "Grafana http://127.0.0.1:3000  Prometheus http://127.0.0.1:9090  OTLP 127.0.0.1:4317 and :4318"

compose-down: ## stop the compose stack and delete its volumes
	$(COMPOSE) down --volumes

k6-smoke: install ## k6 smoke test on a fresh service, counts checked (TARGET=host:port for a running one)
	$(BIN)/python k6/run.py $(if $(TARGET),--target $(TARGET)) k6/smoke.js $(ARGS)

k6-load: install ## k6 ramping load, 8 VUs, 100 records/request (ARGS="-e VUS=16 -e PLACEMENT=scope")
	$(BIN)/python k6/run.py $(if $(TARGET),--target $(TARGET)) k6/load.js $(ARGS)

k6-soak: install ## k6 soak, 50 Exports/s for 30 minutes (ARGS="-e RATE=100 -e DURATION=2h")
	$(BIN)/python k6/run.py $(if $(TARGET),--target $(TARGET)) k6/soak.js $(ARGS)

clean: ## remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build *.egg-info
	rm -f otlp_stats/counting/_wire.*.so otlp_stats/patterns/_masker.*.so

bench: install system-deps ## measure decode floor, baseline and service in one run; rewrites BENCHMARKS.md (ARGS="--duration 60")
	$(BIN)/python -m bench.run $(ARGS)

# FUZZ_SECONDS=3600 for a longer run; the corpus in .fuzz-corpus grows across runs.
FUZZ_SECONDS ?= 600
fuzz: install ## coverage-guided fuzzing (atheris) of decode and resolve, FUZZ_SECONDS (600) long
	mkdir -p .fuzz-corpus
	$(BIN)/python -m tests.fuzz.atheris_run .fuzz-corpus -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048
	HYPOTHESIS_PROFILE=fuzz $(BIN)/pytest tests/test_hostile_input.py -k decode_path -p no:cacheprovider

soak: install ## bounded soak: RSS and latency every 20 s for 10 min, then a verdict (ARGS="--duration 3600")
	$(BIN)/python -m bench.soak --duration 600 --interval 20 --rate 400 --records-per-request 200 $(ARGS)
