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

.PHONY: install demo test sample-data clean umct-ablation contrastive-recipes hippo-data hippo-umct

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

# UMCT on MSD Hippocampus (issue 12). The paper recipe and the single-view baseline with 2, 4 and
# 16 labeled volumes (the rest of the training pool unlabeled), and the one-factor ablation arms
# at 4 labeled; 3 seeds, each drawing its own labeled volumes (data.labeled_seed = seed).
# Needs the imported dataset (hippo-data). JOBS runs in parallel, one torch thread each.
HIPPO_DATA ?= sample_data/hippocampus
HU_OUT ?= runs/hippo_umct
HU_SEEDS ?= 0 1 2
HU_LABELED ?= 4 2 16
HU_ABLATION ?= ensemble_supervised cotrain_average cotrain_entropy confidence
JOBS ?= 2
hippo-data: $(HIPPO_DATA)/dataset.json
$(HIPPO_DATA)/dataset.json: | $(VENV)/.installed
	$(BIN)/medssl data import-msd ../shared/data/hippocampus_msd $(HIPPO_DATA)

hippo-umct: install hippo-data
	@for s in $(HU_SEEDS); do \
	  for n in $(HU_LABELED); do for arm in single_view cotrain_variance; do \
	    echo "$(HU_OUT)/$$arm-n$$n-s$$s configs/hippocampus/umct_arms/$$arm.yaml --set name=$$arm-n$$n --set data.num_labeled=$$n --set data.labeled_seed=$$s --set trainer.seed=$$s --set data.root=$(HIPPO_DATA)"; \
	  done; done; \
	  for arm in $(HU_ABLATION); do \
	    echo "$(HU_OUT)/$$arm-n4-s$$s configs/hippocampus/umct_arms/$$arm.yaml --set name=$$arm-n4 --set data.num_labeled=4 --set data.labeled_seed=$$s --set trainer.seed=$$s --set data.root=$(HIPPO_DATA)"; \
	  done; done | MEDSSL=$(BIN)/medssl xargs -P $(JOBS) -L 1 scripts/run_one.sh
	$(BIN)/python -m medssl.eval.umct_report $(HU_OUT) --out reports/hippocampus_umct.md

# Global / local contrastive pretraining (Chaitanya et al. 2020) on the phantoms: pretrain once
# (2D global G^D, then 2D local L^D; add global_3d local_3d to CL_STAGES and local3d to CL_INITS
# for the 3D variant), then fine-tune with the same budget from random init / global /
# global+local on N = 1, 2, 4 labeled volumes, 3 seeds (the seed also picks which volumes are
# labeled), and write reports/contrastive_phantoms.md (~1 h on 2 cores). One torch thread per
# run: on 2 cores beside another job, more threads oversubscribe and every step gets far slower.
CL_SEEDS ?= 0 1 2
CL_LABELED ?= 1 2 4
CL_STAGES ?= global_2d local_2d
CL_INITS ?= random global2d local2d
CL := $(BIN)/medssl train --set trainer.threads=1 --set trainer.progress=false
CL_OUT ?= runs/contrastive
contrastive-recipes: install sample-data
	@for st in $(CL_STAGES); do \
	  test -f $(CL_OUT)/$$st/metrics.json && continue; \
	  $(CL) configs/contrastive/$$st.yaml --out $(CL_OUT)/$$st $$(test -d $(CL_OUT)/$$st && echo --resume) \
	    --set init_from=$$(case $$st in local_2d) echo $(CL_OUT)/global_2d/checkpoints/last.ckpt;; \
	      local_3d) echo $(CL_OUT)/global_3d/checkpoints/last.ckpt;; *) echo null;; esac) || exit 1; \
	done
	@for seed in $(CL_SEEDS); do for n in $(CL_LABELED); do for init in $(CL_INITS); do \
	  run=$(CL_OUT)/ft-$$init-n$$n-s$$seed; test -f $$run/metrics.json && continue; \
	  case $$init in random) src=null;; global2d) src=$(CL_OUT)/global_2d/checkpoints/last.ckpt;; \
	    local2d) src=$(CL_OUT)/local_2d/checkpoints/last.ckpt;; global3d) src=$(CL_OUT)/global_3d/checkpoints/last.ckpt;; \
	    local3d) src=$(CL_OUT)/local_3d/checkpoints/last.ckpt;; esac; \
	  $(CL) configs/contrastive/finetune.yaml --out $$run $$(test -d $$run && echo --resume) --set name=ft-$$init-n$$n \
	    --set init_from=$$src --set data.num_labeled=$$n --set data.labeled_seed=$$seed --set trainer.seed=$$seed || exit 1; \
	done; done; done
	$(BIN)/python -m medssl.eval.contrastive_report $(CL_OUT) --labeled $(CL_LABELED) --out reports/contrastive_phantoms.md
