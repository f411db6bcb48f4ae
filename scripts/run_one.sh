#!/bin/sh
# One run of an experiment grid: run_one.sh OUT CONFIG [medssl train options...]
# Skips a finished run (metrics.json present), resumes an interrupted one, and logs to OUT.log.
# The grids in the Makefile feed it through `xargs -P JOBS` (one torch thread per run: on a few
# cores, parallel single-threaded runs finish sooner than one multi-threaded run after another).
set -u
out=$1; config=$2; shift 2
test -f "$out/metrics.json" && exit 0
resume=""; test -d "$out" && resume="--resume"
mkdir -p "$(dirname "$out")"
${MEDSSL:-medssl} train "$config" --out "$out" $resume --set trainer.threads=1 --set trainer.progress=false "$@" \
  >>"$out.log" 2>&1 || { echo "failed: $out (see $out.log)" >&2; exit 1; }
echo "done: $out $(grep -o 'test Dice [0-9.]*' "$out.log" | tail -1)"
