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

.PHONY: install demo test sample-data clean review-install review-loop image-lock umct-ablation contrastive-recipes hippo-data hippo-umct channels-ablation

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

test: install review-install
	$(BIN)/python -m pytest -q

# The napari review plugin (issue 15) and what its widget tests need: napari + PySide6 + pytest-qt
# in the venv (about 20 s from a local index; none of it requires torchvision or another torch),
# and an X server, since offscreen Qt cannot render napari: Xvfb and the xcb libraries, installed
# with apt-get when missing (CI runs as root on Debian). Without them the widget tests skip, saying why.
REVIEW_PIP ?= "napari>=0.5" "PySide6-Essentials>=6.6" "pytest-qt>=4.4"
XVFB_PKGS ?= xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-image0 libxcb-randr0 \
  libxcb-render-util0 libxcb-shape0 libxkbcommon-x11-0 libxcb-cursor0
review-install: $(VENV)/.review-installed
$(VENV)/.review-installed: $(VENV)/.installed plugins/napari-medssl/pyproject.toml
	$(BIN)/python -m pip install -q -e plugins/napari-medssl $(REVIEW_PIP)
	@if $(BIN)/python -c "import torchvision" 2>/dev/null; then \
	  echo "error: torchvision got installed (it drags in a CUDA torch); remove it"; exit 1; fi
	@if ! command -v Xvfb >/dev/null || ! dpkg -s $(XVFB_PKGS) >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(XVFB_PKGS) >/dev/null || \
	    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(XVFB_PKGS) >/dev/null; }; \
	  else echo "warning: Xvfb missing and not root: apt-get install $(XVFB_PKGS) (the napari widget tests skip)"; fi; \
	fi
	touch $@

# Closing the review loop on the sample data (issue 15): the UMCT recipe -> pseudo-labels of the 36
# unlabeled phantoms -> scripted review through the plugin's review API (the 4 least confident
# corrected with the phantom's true label, the 8 most confident accepted) -> the same recipe again
# with data.extra_labels -> val/test Dice before and after (RL_OUT/review_loop.json).
RL_OUT ?= runs/review_loop
RL_ARGS ?=
review-loop: install review-install sample-data
	$(BIN)/python -m napari_medssl.review_loop $(DEMO_DATA) $(RL_OUT) $(RL_ARGS)

clean:
	rm -rf $(VENV) runs .pytest_cache

# Container images (docker/, issue 16): regenerate docker/requirements-{cpu,cuda}.lock from
# pyproject.toml with hashes (uv resolves for the images' platform without installing anything).
image-lock: install
	$(BIN)/python -m pip install -q "uv>=0.5"
	UV=$(BIN)/uv scripts/lock_image.sh

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
# 16 labeled volumes (the rest of the training pool unlabeled), then the one-factor ablation arms
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
	@{ for s in $(HU_SEEDS); do for n in $(HU_LABELED); do for arm in single_view cotrain_variance; do \
	    echo "$(HU_OUT)/$$arm-n$$n-s$$s configs/hippocampus/umct_arms/$$arm.yaml --set name=$$arm-n$$n --set data.num_labeled=$$n --set data.labeled_seed=$$s --set trainer.seed=$$s --set data.root=$(HIPPO_DATA)"; \
	  done; done; done; \
	  for s in $(HU_SEEDS); do for arm in $(HU_ABLATION); do \
	    echo "$(HU_OUT)/$$arm-n4-s$$s configs/hippocampus/umct_arms/$$arm.yaml --set name=$$arm-n4 --set data.num_labeled=4 --set data.labeled_seed=$$s --set trainer.seed=$$s --set data.root=$(HIPPO_DATA)"; \
	  done; done; } | MEDSSL=$(BIN)/medssl xargs -P $(JOBS) -L 1 scripts/run_one.sh
	$(BIN)/python -m medssl.eval.umct_report $(HU_OUT) --out reports/hippocampus_umct.md

# Two-channel phantoms (issue 13): the same supervised recipe with both channels, channel 0 only
# and channel 1 only, and UMCT with both; 3 seeds; table in reports/channels_phantoms.md.
CH_DATA ?= sample_data/phantoms2ch
CH_OUT ?= runs/channels
$(CH_DATA)/dataset.json: | $(VENV)/.installed
	$(BIN)/medssl sample-data $(CH_DATA) --channels 2 --force
channels-ablation: install $(CH_DATA)/dataset.json
	@for s in 0 1 2; do \
	  echo "$(CH_OUT)/both-s$$s configs/channels/supervised.yaml --set name=supervised-both-channels --set trainer.seed=$$s --set data.root=$(CH_DATA)"; \
	  echo "$(CH_OUT)/ch0-s$$s configs/channels/supervised.yaml --set name=supervised-channel-0-only --set data.channels=[0] --set trainer.seed=$$s --set data.root=$(CH_DATA)"; \
	  echo "$(CH_OUT)/ch1-s$$s configs/channels/supervised.yaml --set name=supervised-channel-1-only --set data.channels=[1] --set trainer.seed=$$s --set data.root=$(CH_DATA)"; \
	  echo "$(CH_OUT)/umct-s$$s configs/channels/umct.yaml --set name=umct-both-channels --set trainer.seed=$$s --set data.root=$(CH_DATA)"; \
	done | MEDSSL=$(BIN)/medssl xargs -P $(JOBS) -L 1 scripts/run_one.sh
	$(BIN)/medssl compare $(CH_OUT)/*-s[0-9] --baseline supervised-both-channels --out reports/channels_phantoms.md \
	  --title "Two-channel phantoms: both channels against one" \
	  --intro "medssl sample-data --channels 2 (48^3 voxels, 4 labeled training cases, 36 unlabeled, 4 val, 8 test): channel 0 shows every blob, channel 1 only class 1, so only both channels separate the classes. configs/channels/ (300 steps, 32^3 patches, one torch thread); data.channels=[0] or [1] trains the same recipe on one channel. make channels-ablation."

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

# Global / local contrastive pretraining (Chaitanya et al., NeurIPS 2020) on MSD Hippocampus
# (issue 12): the paper recipe with the official code's settings (configs/hippocampus/
# contrastive_paper_global.yaml = G^D, contrastive_paper_local.yaml = G^D + L^R) and the arms
# random init, G^R, G^D, G^D + L^R, G^D + L^D, each fine-tuned as a 2D U-Net on slices and scored
# per volume (contrastive_finetune_2d.yaml) with 1, 2 and 5 labeled volumes, 3 seeds (data.labeled_seed =
# trainer.seed = seed: each seed labels other volumes). Each strategy is pretrained ONCE on the 145
# training volumes without labels; the 3 seeds of an arm share that pretraining, so their spread
# covers fine-tuning, not pretraining (the report says so). Order: G^R and G^D, then L^R and L^D
# (on the G^D encoder), then the 45 fine-tunes, JOBS at a time, one torch thread each
# (scripts/run_one.sh: skips finished runs, resumes interrupted ones, logs to OUT.log), then one
# full-supervision reference (all 145 pool volumes labeled, same budget).
# Budget, measured with one torch thread while other jobs loaded the 2 cores (load average ~4):
# global 0.077 s/step and local 0.118 s/step (bf16), fine-tuning 0.07-0.14 s/step + 4-6 s per
# validation + ~15 s start and test. G^R || G^D 5000 steps (~7 min), L^R || L^D 5000 steps
# (~10 min), 45 fine-tunes of 1200 steps (~2.5-4 min each, two at a time: ~55-95 min): about
# 1.2-2 h with JOBS=2.
HIPPO_DATA ?= sample_data/hippocampus
JOBS ?= 2
HC_OUT ?= runs/hippo_contrastive
HC_SEEDS ?= 0 1 2
HC_LABELED ?= 1 2 5
HC_ARMS ?= random global_gr global_gd local_lr local_ld
# the full-supervision reference (the paper's "closing the gap"): random init on all 145 pool volumes, one seed
HC_FULL ?= 145
HC_CFG := configs/hippocampus
HC_REPORT ?= reports/hippocampus_contrastive.md
HC_RUN := MEDSSL=$(BIN)/medssl xargs -P $(JOBS) -L 1 scripts/run_one.sh
.PHONY: hippo-contrastive
hippo-contrastive: install hippo-data
	@printf '%s\n' "$(HC_OUT)/global_gd $(HC_CFG)/contrastive_paper_global.yaml" \
	  "$(HC_OUT)/global_gr $(HC_CFG)/contrastive_arms/global_gr.yaml" \
	  | sed 's|$$| --set data.root=$(HIPPO_DATA)|' | $(HC_RUN)
	@printf '%s\n' "$(HC_OUT)/local_lr $(HC_CFG)/contrastive_paper_local.yaml" \
	  "$(HC_OUT)/local_ld $(HC_CFG)/contrastive_arms/local_ld.yaml" \
	  | sed 's|$$| --set init_from=$(HC_OUT)/global_gd/checkpoints/last.ckpt --set data.root=$(HIPPO_DATA)|' | $(HC_RUN)
	@for s in $(HC_SEEDS); do for n in $(HC_LABELED); do for arm in $(HC_ARMS); do \
	  src=$$(test $$arm = random && echo null || echo $(HC_OUT)/$$arm/checkpoints/last.ckpt); \
	  echo "$(HC_OUT)/ft-$$arm-n$$n-s$$s $(HC_CFG)/contrastive_finetune_2d.yaml --set name=ft-$$arm-n$$n --set init_from=$$src --set data.num_labeled=$$n --set data.labeled_seed=$$s --set trainer.seed=$$s --set data.root=$(HIPPO_DATA)"; \
	done; done; done | $(HC_RUN)
	@echo "$(HC_OUT)/ft-random-n$(HC_FULL)-s0 $(HC_CFG)/contrastive_finetune_2d.yaml --set name=ft-random-n$(HC_FULL) --set init_from=null --set data.num_labeled=$(HC_FULL) --set data.labeled_seed=0 --set trainer.seed=0 --set data.root=$(HIPPO_DATA)" | $(HC_RUN)
	$(BIN)/python -m medssl.eval.contrastive_report $(HC_OUT) --preset hippocampus --labeled $(HC_LABELED) \
	  --full $(HC_FULL) --out $(HC_REPORT)

# MedMNIST SSL with pretraining seeds (issue 12): SimCLR, BYOL, MoCo v3 and random init on BreastMNIST,
# 3 pretraining seeds x 5 eval seeds (40 pretraining epochs), linear + kNN at 1 / 10 / 100 % labels; about 1.2 h on 2 idle
# cores (budget in the recipe's comments). Resumes when run again. Copies the report, its plots and
# results.csv to reports/breastmnist_seeds/.
MEDMNIST_ROOT ?= ../shared/data/medmnist
BS_OUT ?= runs/breast_seeds
BS_THREADS ?= 2
.PHONY: breast-seeds
breast-seeds: install
	MEDMNIST_ROOT=$(MEDMNIST_ROOT) $(BIN)/medssl eval medmnist configs/medmnist/breastmnist_seeds.yaml \
	  --out $(BS_OUT) --threads $(BS_THREADS) $(BS_ARGS)
	mkdir -p reports/breastmnist_seeds
	cp $(BS_OUT)/report.md $(BS_OUT)/results.csv $(BS_OUT)/*.png reports/breastmnist_seeds/
