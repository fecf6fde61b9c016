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

# mypy where it helps: the canonical Network, the fault models, the bounds and the core CLI.
MYPY_FILES := src/faultbound/network/core.py src/faultbound/network/ops.py src/faultbound/network/activations.py \
	src/faultbound/network/readers/module.py src/faultbound/faults.py src/faultbound/errors.py \
	src/faultbound/bounds/paper.py src/faultbound/bounds/api.py src/faultbound/bounds/exact.py src/faultbound/data.py \
	src/faultbound/demo.py src/faultbound/cli/core.py src/faultbound/cli/_common.py \
	src/faultbound/network/readers/pt2_guard.py src/faultbound/cli/_data.py \
	src/faultbound/network/readers/__init__.py src/faultbound/network/readers/_common.py \
	src/faultbound/network/readers/onnx.py src/faultbound/network/readers/export.py \
	src/faultbound/network/readers/files.py \
	src/faultbound/measure/stats.py src/faultbound/measure/campaign.py src/faultbound/measure/distributed.py \
	src/faultbound/measure/search.py \
	src/faultbound/measure/engine.py src/faultbound/measure/faultset.py src/faultbound/measure/state.py \
	src/faultbound/measure/rules.py src/faultbound/measure/values.py \
	src/faultbound/cli/measure.py \
	src/faultbound/apps/training/__init__.py src/faultbound/apps/training/fit.py \
	src/faultbound/apps/training/regularisers.py src/faultbound/apps/training/experiment.py \
	src/faultbound/report/build.py src/faultbound/report/words.py src/faultbound/report/plots.py \
	src/faultbound/report/render.py src/faultbound/cli/report.py \
	src/faultbound/bounds/tight.py src/faultbound/bounds/tolerance.py src/faultbound/bounds/certify.py \
	src/faultbound/failures.py src/faultbound/cli/certify.py src/faultbound/apps/boosting.py

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
