#!/usr/bin/env bash
# The GPU checks of the batch-1 path (issue figures; not a test): run from the repository root on a machine
# with one CUDA GPU and PyTorch. Writes its logs under ${OUT:-gpu-out}.
#   1. bench_batch1.py on the GPU: samples/s of the batch-1 path (torch ops) vs the paper-shaped and plain loops,
#      widths 1,000 and 50,000;
#   2. the parity-mlp-paper teacher (width 50,000, SGD, batch 1) for STEPS steps on the GPU, timed, to project
#      the paper's 20M steps.
set -euo pipefail
OUT=${OUT:-gpu-out}
STEPS=${STEPS:-1000000}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/src PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name(0))" | tee -a "$OUT/gpu.txt"
python3 benchmarks/bench_batch1.py --device cuda --widths 1000 50000 --rounds 3 --seconds 1.0 2>&1 | tee "$OUT/bench_batch1_cuda.txt"
start=$(date +%s.%N)
python3 -m progdistill teacher parity-mlp-paper device=cuda teacher.steps=$STEPS teacher.checkpoint_every=$((STEPS / 2)) \
    --out "$OUT/paper-teacher" --quiet 2>&1 | tail -5 | tee "$OUT/teacher.txt"
end=$(date +%s.%N)
python3 - "$start" "$end" "$STEPS" "$OUT" <<'PY' | tee -a "$OUT/teacher.txt"
import json, sys
start, end, steps, out = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
took = end - start
curve = json.load(open(f"{out}/paper-teacher/teacher/curve.json"))
print(f"parity-mlp-paper teacher, {steps:,} steps on the GPU: {took:.1f} s wall ({1e6 * took / steps:.1f} us/step, "
      f"evaluations and files included); 20M steps projected: {took * 20e6 / steps / 3600:.2f} h")
print("curve (step, loss, accuracy):", [(p["step"], round(p["loss"], 3), round(p["accuracy"], 3)) for p in curve])
PY
