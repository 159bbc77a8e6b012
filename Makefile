# Two commands do all the set-up: `make demo` (edge only, no TensorFlow) and `make test`.
PY ?= python3
VENV := .venv
EDGE_VENV := .venv-edge
PIP_FLAGS := --quiet --disable-pip-version-check

.PHONY: demo test lint demo-bundle bench pi-check clean

# The speech tests need espeak-ng (a Debian package, not a pip one). As root with apt, install it quietly if it
# is missing; otherwise say so and go on: those tests then skip with that reason.
APT := DEBIAN_FRONTEND=noninteractive apt-get -y -qq -o Dpkg::Use-Pty=0
ESPEAK_NG := command -v espeak-ng >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 \
	&& { $(APT) install espeak-ng </dev/null >/dev/null 2>&1 \
	     || { $(APT) update </dev/null >/dev/null 2>&1 && $(APT) install espeak-ng </dev/null >/dev/null 2>&1; }; }; } \
	|| echo "note: espeak-ng is not installed and could not be (sudo apt install espeak-ng); speech tests will skip"

$(EDGE_VENV)/.installed: pyproject.toml
	$(PY) -m venv $(EDGE_VENV)
	$(EDGE_VENV)/bin/pip install $(PIP_FLAGS) -e '.[edge]'
	@if $(EDGE_VENV)/bin/python -c "import tensorflow" 2>/dev/null; then \
		echo "error: TensorFlow got into the edge venv"; exit 1; fi
	@touch $@

$(VENV)/.installed: pyproject.toml
	$(PY) -m venv $(VENV)
	$(VENV)/bin/pip install $(PIP_FLAGS) -e '.[train,dev]'
	@touch $@

## Caption the shipped sample frames and video with the shipped int8 bundle (no TensorFlow).
demo: $(EDGE_VENV)/.installed
	$(EDGE_VENV)/bin/scenecap caption demo/frames demo/video --bundle demo/bundle --every 2

## Run the test suite (trains tiny models for real; about 15 minutes from a clean clone on 2 CPU cores, install
## included). TEST_JOBS pytest-xdist workers (default 2); each module's tests stay on one worker (its fixtures are
## built once), and each worker builds the session's shared models itself. TEST_JOBS=0: one process.
# The original system's tokenizer.pickle is not public: its tests run when ../shared/seed has it (or when
# SCENECAP_SEED_TOKENIZER names it) and skip otherwise.
SEED_TOKENIZER := $(wildcard ../shared/seed/tokenizer.pickle)
TEST_JOBS ?= 2
test: $(VENV)/.installed
	@$(ESPEAK_NG)
	$(if $(SEED_TOKENIZER),SCENECAP_SEED_TOKENIZER="$${SCENECAP_SEED_TOKENIZER:-$(abspath $(SEED_TOKENIZER))}" )$(VENV)/bin/python -m pytest $(if $(filter-out 0,$(TEST_JOBS)),-n $(TEST_JOBS) --dist loadscope)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

## Rebuild demo/bundle and demo/bundle-float32 from scratch (synthetic data, seeded): about an hour on 2 CPU cores
## (measured: 58 min of training beside other work, then conversion, calibration and the quality report).
demo-bundle: $(VENV)/.installed
	$(VENV)/bin/python demo/build_bundle.py

## Run docs/raspberry-pi.md on an emulated arm64 Debian root (as root, x86-64 host; not in CI; ~10 min the first
## time). Needs .venv-edge for the x86-64 side of the caption comparison.
pi-check: $(EDGE_VENV)/.installed
	bash benchmarks/pi_emulated.sh

clean:
	rm -rf $(VENV) $(EDGE_VENV) .pytest_cache
