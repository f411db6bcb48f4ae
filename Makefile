# Two entry points for a fresh machine:  make demo  |  make test
# torch is installed first and pinned (<2.14): on a CPU machine a looser spec pulls a CUDA build.
# On another machine, point pip at PyTorch's CPU index, e.g.
#   make demo PIP_TORCH_ARGS="--index-url https://download.pytorch.org/whl/cpu"
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
TORCH_SPEC ?= torch==2.13.0
PIP_TORCH_ARGS ?=
DEMO_DATA ?= sample_data/phantoms
DEMO_RUN ?= runs/demo

.PHONY: install demo test sample-data clean umct-ablation

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH_SPEC)" $(PIP_TORCH_ARGS)
	$(BIN)/python -m pip install -q -e ".[test]"
	@if $(BIN)/python -c "import torchvision" 2>/dev/null; then \
	  echo "error: torchvision got installed (it drags in a CUDA torch); remove it"; exit 1; fi
	touch $@

$(DEMO_DATA)/dataset.json: | $(VENV)/.installed
	$(BIN)/medssl sample-data $(DEMO_DATA) --force

sample-data: $(DEMO_DATA)/dataset.json

demo: install sample-data
	rm -rf $(DEMO_RUN)
	$(BIN)/medssl train configs/supervised/phantoms.yaml --out $(DEMO_RUN)

test: install
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache

# UMCT ablation on the phantoms: single view / 3-view plain average / full UMCT, 3 seeds each,
# then the comparison table (about 35 min on 2 CPU cores).
UMCT_SEEDS ?= 0 1 2
UMCT_RECIPES ?= single_view multiview_average umct
umct-ablation: install sample-data
	@for seed in $(UMCT_SEEDS); do for r in $(UMCT_RECIPES); do \
	  test -f runs/umct/$$r-s$$seed/metrics.json && continue; \
	  $(BIN)/medssl train configs/umct/$$r.yaml --set trainer.seed=$$seed --set trainer.progress=false \
	    --out runs/umct/$$r-s$$seed $$(test -d runs/umct/$$r-s$$seed && echo --resume) || exit 1; \
	done; done
	$(BIN)/medssl compare runs/umct/*-s* --baseline umct-single-view --out reports/umct_phantoms.md
