#!/usr/bin/env bash
# Builds benchmarks/gpu/wheels/: the packages `emo` needs that the GPU machine's Python lacks (diffusers,
# trl, datasets, deepspeed, pydantic and what they need beyond torch/transformers/accelerate/peft/typer),
# at the versions of the environment this runs in (the ones the --tiny test passed with), for CPython 3.12
# on x86-64 Linux. DeepSpeed is source-only on PyPI: its wheel is built here (no compiled ops; it JITs
# them on the GPU machine if a step needs one). run.sh installs whatever this folder holds.
#
#   . /work/venvs/BRANCH/bin/activate && bash benchmarks/gpu/wheels.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dest="$here/wheels"
rm -rf "$dest" && mkdir -p "$dest"
# Not on the GPU machine's image (its package list: /work/.library/device/KINDS.md); typing-extensions
# travels too: pydantic 2.14 needs >= 4.16, newer than the image may hold.
names=(diffusers trl datasets pydantic pydantic-core annotated-types typing-inspection typing-extensions
       dill multiprocess hjson importlib-metadata zipp)
pins=()
for n in "${names[@]}"; do
  pins+=("$n==$(python -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$n")")
done
python -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$dest" "${pins[@]}"
ds=$(python -c "import importlib.metadata as m; print(m.version('deepspeed'))")
# --no-build-isolation: DeepSpeed's setup imports torch; use this environment's instead of downloading one.
DS_BUILD_OPS=0 python -m pip wheel -q --no-deps --no-build-isolation -w "$dest" "deepspeed==$ds"
ls -la "$dest"
du -sh "$dest"
