#!/usr/bin/env bash
# The GPU benchmark (benchmarks/gpu/README.md): every item in priority order, each in its own process under
# its own time budget, each measurement appended to $OUT/results.jsonl as it is taken.
#
#   benchmarks/gpu/run.sh            # on the GPU machine (about 6 minutes at most)
#   benchmarks/gpu/run.sh --tiny     # dry run: tiny models on the CPU (the tests run this)
#   benchmarks/gpu/run.sh sample     # chosen items only
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
# item:budget in seconds, in priority order; the budgets add up to 330 s (+ the install), inside 6 minutes.
plan=(env:15 emogen_train:80 sample:110 ldm_train:70 zero2:55)
tiny=""
chosen=()
for arg in "$@"; do
  case $arg in
    --tiny) tiny=--tiny ;;
    -h|--help) sed -n 2,7p "$0"; exit 0 ;;
    *) chosen+=("$arg") ;;
  esac
done
known=" ${plan[*]%%:*} "
for c in "${chosen[@]}"; do
  [[ $known == *" ${c%%:*} "* ]] || { echo "run.sh: unknown item '$c' (items:${known% })" >&2; exit 2; }
done
OUT=${OUT:-$root/benchmarks/results/gpu-out}
mkdir -p "$OUT"
results=$OUT/results.jsonl
log=$OUT/log.txt
# The packages the GPU machine lacks travel as wheels (benchmarks/gpu/wheels.sh builds them, for CPython
# 3.12): installed only where they are missing.
site=""
if ! python3 -c "import diffusers, trl, datasets, deepspeed, pydantic" 2>/dev/null; then
  compgen -G "$here/wheels/*.whl" >/dev/null || {
    echo "run.sh: diffusers/trl/datasets/deepspeed/pydantic are missing and $here/wheels is empty: run benchmarks/gpu/wheels.sh where pip works" >&2; exit 1; }
  site=${EMO_GPU_SITE:-/tmp/emo-gpu-site}
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    "$here"/wheels/*.whl >>"$log" 2>&1 || { echo "run.sh: installing $here/wheels failed (see $log)" >&2; exit 1; }
fi
export PYTHONPATH="${site:+$site:}$root${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# Tiny runs share 2 slow CPU cores: their budget is generous; the GPU budgets are the plan's.
total=${EMO_GPU_TOTAL_S:-$([[ -n $tiny ]] && echo 1800 || echo 345)}
start=$SECONDS
for entry in "${plan[@]}"; do
  item=${entry%%:*}
  budget=${entry#*:}
  [[ -n $tiny ]] && budget=300
  if (( ${#chosen[@]} )) && [[ " ${chosen[*]} " != *" $item "* ]]; then continue; fi
  left=$(( total - (SECONDS - start) ))
  (( budget > left )) && budget=$left
  if (( budget < 10 )); then
    printf '{"item": "%s", "status": "skipped", "why": "the run'"'"'s %d s were spent"}\n' "$item" "$total" >>"$results"
    continue
  fi
  echo "== $item (budget ${budget}s)" | tee -a "$log"
  t=$SECONDS
  timeout --kill-after=5 "$budget" python3 -m benchmarks.gpu.bench "$item" $tiny --out "$results" >>"$log" 2>&1
  rc=$?
  status=$([[ $rc == 0 ]] && echo done || { [[ $rc == 124 || $rc == 137 ]] && echo timeout || echo failed; })
  printf '{"item": "%s", "status": "%s", "rc": %d, "budget_s": %d, "wall_s": %d}\n' \
    "$item" "$status" "$rc" "$budget" "$((SECONDS - t))" >>"$results"
  echo "   $status in $((SECONDS - t))s" | tee -a "$log"
done
python3 -m benchmarks.gpu.bench report "$results" --dest "$OUT" | tee -a "$log"
