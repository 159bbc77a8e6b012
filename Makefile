# Two commands do all the set-up: `make demo` (edge only, no TensorFlow) and `make test`.
PY ?= python3
VENV := .venv
EDGE_VENV := .venv-edge
PIP_FLAGS := --quiet --disable-pip-version-check

.PHONY: demo test lint demo-bundle bench clean

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

## Run the test suite (trains tiny models; about 10 minutes on 2 CPU cores).
test: $(VENV)/.installed
	$(VENV)/bin/python -m pytest

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check .

## Rebuild demo/bundle from scratch (synthetic data, seeded): about 10 minutes on 2 CPU cores.
demo-bundle: $(VENV)/.installed
	$(VENV)/bin/python demo/build_bundle.py

clean:
	rm -rf $(VENV) $(EDGE_VENV) .pytest_cache
