#!/usr/bin/env bash
# The GPU run, ready to go: on a machine with one CUDA GPU, from the repository root,
#
#     bash benchmarks/gpu.sh            # installs the CUDA extra and runs, 8 minutes at most in all
#     bash benchmarks/gpu.sh --dry-run  # prints the commands and checks their arguments, runs nothing
#
# 1. pip install -e ".[cuda,test]"  (JAX's CUDA 12 wheels; NVIDIA driver >= 525)
# 2. jaxgrad bench --tag gpu at widths 128..1024: the engine against the GPU's own draw-plus-GEMM
#    limit and the user-code baselines, written to results/benchmarks/gpu.json and its table
#    (sample-layers per second included)
# 3. jaxgrad run depth_sweep --scale full into results/gpu/ (the accelerator-scale study)
#
# Each step has its own time limit (`timeout`), so the whole run stays within about 8 minutes
# even if one step is slower than planned; a step that hits its limit is reported and the
# next one still runs. Commit results/benchmarks/gpu.json and gpu.md afterwards.
set -uo pipefail

DRY_RUN=0
case "${1:-}" in
  "") ;;
  --dry-run) DRY_RUN=1 ;;
  *) echo "gpu.sh: unknown argument '$1'; valid: --dry-run (or nothing)" >&2; exit 2 ;;
esac

PYTHON="${PYTHON:-python}"
BENCH_ARGS=(--tag gpu --widths 128,256,512,1024 --depths 64,1000 --samples 512 --repeats 3 --no-torch)
STUDY_ARGS=(depth_sweep --scale full --out results/gpu)
status=0

step() {  # step SECONDS COMMAND...: print it, and run it under a time limit unless --dry-run
  local limit=$1; shift
  echo "+ timeout ${limit}s $*"
  if [[ $DRY_RUN == 1 ]]; then return 0; fi
  timeout "$limit" "$@"
  local rc=$?
  if [[ $rc == 124 ]]; then echo "gpu.sh: '$*' passed its ${limit} s limit" >&2; fi
  if [[ $rc != 0 ]]; then status=$rc; fi
}

if [[ $DRY_RUN == 1 ]]; then
  # The arguments must be ones the commands accept: parse them here, without running anything.
  "$PYTHON" - "${BENCH_ARGS[@]}" <<'EOF' || exit 2
import argparse, sys
from benchmarks import bench
parser = argparse.ArgumentParser(prog="jaxgrad bench")
bench.add_arguments(parser)
args = parser.parse_args(sys.argv[1:])
assert args.tag == "gpu" and min(args.widths) >= 128 and max(args.widths) <= 1024, args
EOF
  "$PYTHON" -c "from experiments import depth_sweep; depth_sweep.Config.full()" || exit 2
else
  if ! nvidia-smi > /dev/null 2>&1; then
    echo "gpu.sh: no NVIDIA GPU here (nvidia-smi failed); run it on a CUDA machine, or use --dry-run" >&2
    exit 2
  fi
fi

step 120 "$PYTHON" -m pip install -q -e ".[cuda,test]"
step 20 "$PYTHON" -c "import jax; assert jax.default_backend() == 'gpu', jax.devices(); print(jax.devices())"
step 250 jaxgrad bench "${BENCH_ARGS[@]}"
step 90 jaxgrad run "${STUDY_ARGS[@]}"
exit $status
