# Two commands set everything up: `make demo` and `make test`.
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
TORCH  := torch==2.13.0
EXTRAS := cli,onnx,data,plot,report,dev,ray,exact

.PHONY: demo test install lint bench clean soundness

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

# mypy on every file of the package.
MYPY_FILES := src/faultbound

lint: install
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/mypy --ignore-missing-imports --follow-imports=silent $(MYPY_FILES)

test: install lint
	$(VENV)/bin/python -m pytest

# The soundness hammer (not CI): every test marked `soundness` with SCALE x more examples, over SEEDS
# random hypothesis seeds; a failure prints hypothesis' replay blob and the seed. Tens of minutes.
# FIRST..SEEDS picks a range of seeds (e.g. two shells: SEEDS=10, and FIRST=11 SEEDS=20).
FIRST ?= 1
SEEDS ?= 20
SCALE ?= 4
soundness: install
	@for s in $$(seq $(FIRST) $(SEEDS)); do \
	  echo "== soundness seed $$s of $(FIRST)..$(SEEDS) ($(SCALE)x examples)"; \
	  env -u CI FB_SOUNDNESS_SCALE=$(SCALE) $(PY) -m pytest -m soundness -q -p no:cacheprovider \
	    --hypothesis-seed=$$s || { echo "soundness: FAILED at --hypothesis-seed=$$s (replay blob above)"; exit 1; }; \
	done; echo "soundness: seeds $(FIRST)..$(SEEDS) all passed ($(SCALE)x examples)"

bench: install
	$(PY) benchmarks/vs_pytorchfi.py

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info
