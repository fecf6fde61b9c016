# Two commands set everything up: `make demo` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  := torch==2.13.0
EXTRAS := cli,onnx,data,plot,dev

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

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

test: install lint
	$(VENV)/bin/python -m pytest

bench: install
	$(PY) benchmarks/vs_pytorchfi.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
