# Two commands set everything up: `make demo` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  := torch==2.13.0
EXTRAS := cli,onnx,data,plot,report,dev,exact

.PHONY: demo test install lint bench clean

$(VENV)/bin/python:
	python3 -m venv $(VENV)

$(VENV)/.installed: $(VENV)/bin/python pyproject.toml
	$(PIP) install -q --upgrade pip
	# torch first and pinned: the only build served here is the local CPU wheel.
	$(PIP) install -q "$(TORCH)"
	$(PIP) install -q -c constraints.txt -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(VENV)/bin/faultbound demo

# mypy where it helps: the canonical Network, the fault models, the bounds and the core CLI.
MYPY_FILES := src/faultbound/network/core.py src/faultbound/network/ops.py src/faultbound/network/activations.py \
	src/faultbound/network/extract.py src/faultbound/faults.py src/faultbound/errors.py \
	src/faultbound/bounds/paper.py src/faultbound/bounds/api.py src/faultbound/bounds/exact.py src/faultbound/data.py \
	src/faultbound/demo.py src/faultbound/cli/core.py src/faultbound/cli/_common.py

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy --ignore-missing-imports --follow-imports=silent $(MYPY_FILES)

test: install lint
	$(VENV)/bin/python -m pytest

bench: install
	$(PY) benchmarks/vs_pytorchfi.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
