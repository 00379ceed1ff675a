#!/usr/bin/env bash
# The GPU checks of issue 9, as one prepared run for a short device lease (the budget is 15
# minutes of device time in all: this aims at about 8 on an H200, so that it can run twice).
#
#   bash benchmarks/gpu_checks.sh            # on the GPU machine, in the repository root
#   CHECKS="tests flex" bash benchmarks/gpu_checks.sh     # some of them
#   SIZE="--dim 64 --heads 2 --batch 1 --latent 2 4 4" ...  # another model size for dit_speed
#
# What it runs, each writing its output to $OUT (default /tmp/kinema_gpu):
#   1. the CUDA tests that need no text-encoder weights: placement, fused SDPA kernels, compile,
#      flex attention against SDPA, and a window-attention model trained through flex
#      (tests/test_gpu.py, tests/test_flex.py), and the adapters against diffusers
#   2. benchmarks/dit_speed.py at a GPU size (width 1536, 7488 video tokens, bf16), eager, in
#      fresh processes per row (times, peak memory, share of the matmul peak)
#   3. the same size with both models torch.compiled (--compile --one-process: times only)
#   4. benchmarks/flex_attention.py at 4096 tokens
#
# The GPU machine has torch but not diffusers. Its wheels travel in .whl/ (ignored by git):
#   python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_17_x86_64 -d .whl diffusers==0.42.1 importlib_metadata==10.2.0
# and the device call carries .whl. Tests that need the MiniLM weights (88 MB, over the
# 64 MiB a call may carry) are left out: `make test` covers them on a GPU machine with the
# dev extra installed.
set -uo pipefail
OUT=${OUT:-/tmp/kinema_gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
PY=${PY:-python3}
if [ -d .whl ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
status=0
CHECKS=${CHECKS:-tests dit_speed dit_speed_compile flex}
step() {  # step NAME COMMAND...: run it (if CHECKS names it), keep its output in $OUT/NAME.txt, remember a failure
    local name=$1; shift
    [[ " $CHECKS " == *" $name "* ]] || return 0
    echo "== $name: $*"
    local t0=$SECONDS
    "$@" 2>&1 | tee "$OUT/$name.txt"
    local rc=${PIPESTATUS[0]}
    echo "== $name: exit $rc after $((SECONDS - t0)) s"
    [ "$rc" = 0 ] || status=1
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 | tee "$OUT/gpu.txt"
read -r -a SIZE <<< "${SIZE:---dim 1536 --heads 12 --batch 4 --latent 13 48 48} --no-fp32"
# (the four CUDA tests left out need the tiny model, which needs the MiniLM weights)
step tests $PY -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_flex.py tests/test_adapters.py \
    -k "not pipeline_puts and not half_precisions and not training_runs and not shipped_model"
step dit_speed $PY benchmarks/dit_speed.py "${SIZE[@]}" --runs 10 --rounds 1 --json "$OUT/dit_speed.json"
step dit_speed_compile $PY benchmarks/dit_speed.py "${SIZE[@]}" --runs 10 --rounds 1 --one-process --compile
step flex $PY benchmarks/flex_attention.py --tokens 4096 --heads 8 --batch 2
exit $status
