#!/usr/bin/env bash
# Every GPU check and benchmark in one run (a lent GPU machine has minutes, not hours):
#   1. eager train-step throughput, batch 128/512, fp32/bf16;  2. loader throughput on packed data;
#   3. a real `cosface train` epoch on packed data (loader + step together);  4. the CUDA tests;
#   5. torch.compile throughput;  6. iresnet50/100 + ArcFace step, eager and compiled.  Each stage has its own time limit, so a slow stage costs only itself.
# Usage: bash benchmarks/gpu_check.sh OUTDIR   (needs simplejpeg: carried as a wheel in .whl/ when missing)
set -u
OUTDIR=${1:-gpu_out}; mkdir -p "$OUTDIR"
if ! python3 -c "import simplejpeg" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD/src" PYTHONUNBUFFERED=1
log() { echo "== $*" | tee -a "$OUTDIR/summary.txt"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUTDIR/gpu.txt"
python3 -c "import torch, os; print('torch', torch.__version__, 'cpus', os.cpu_count())" | tee -a "$OUTDIR/gpu.txt"

log "1. eager train step"
timeout 60 python3 benchmarks/train_throughput.py --device cuda --batch 128 512 --dtype fp32 bf16 \
  --iters 20 --warmup 5 2>&1 | tee -a "$OUTDIR/summary.txt"

log "2. data: 32768 noise faces, packed"
timeout 40 python3 - "$OUTDIR" <<'PY'
import sys, os, numpy as np, simplejpeg
from concurrent.futures import ProcessPoolExecutor
def write(c):
    rng = np.random.default_rng(c); d = f"/tmp/gpu_faces/{c:04d}"; os.makedirs(d, exist_ok=True)
    base = rng.integers(0, 256, 3)
    for i in range(64):
        img = np.clip(base + rng.normal(0, 30, (112, 112, 3)), 0, 255).astype(np.uint8)
        open(f"{d}/{i}.jpg", "wb").write(simplejpeg.encode_jpeg(img, quality=90))
with ProcessPoolExecutor() as ex: list(ex.map(write, range(512)))
PY
timeout 40 python3 -m cosface pack /tmp/gpu_faces -o /tmp/gpu_packed --quiet 2>&1 | tail -2
log "loader (packed, batch 512)"
timeout 60 python3 benchmarks/train_throughput.py --device cuda --batch 512 --iters 1 --warmup 1 \
  --loader /tmp/gpu_packed --workers 0 4 8 14 2>&1 | grep loader | tee -a "$OUTDIR/summary.txt"

log "3. cosface train, 1 epoch, bf16, batch 512, 14 workers, packed"
timeout 90 python3 -m cosface train --data /tmp/gpu_packed --out /tmp/gpu_run --no-progress \
  --set train.device=cuda --set train.amp=bf16 --set train.batch_size=512 --set data.workers=14 \
  --set train.epochs=2 --set checkpoint.save_start_epoch=2 --set train.log_every=16 2>&1 | tee -a "$OUTDIR/summary.txt"
cp /tmp/gpu_run/metrics.jsonl "$OUTDIR/train_metrics.jsonl" 2>/dev/null

log "4. CUDA tests"
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/gpu 2>&1 | tail -15 | tee -a "$OUTDIR/summary.txt"

log "5. compiled train step"
timeout 120 python3 benchmarks/train_throughput.py --device cuda --batch 512 --dtype bf16 --compile on \
  --iters 20 --warmup 3 2>&1 | tail -3 | tee -a "$OUTDIR/summary.txt"
# ---- IResNet stage (issue 11): its own time limits, after the MobileFaceNet stages above -------------
log "6. iresnet50/100 + ArcFace (93,431 classes, MS1MV3) train step, batch 128, bf16, channels_last, eager"
timeout 150 python3 benchmarks/train_throughput.py --device cuda --backbone iresnet50 iresnet100 --head arcface \
  --classes 93431 --batch 128 --dtype bf16 --iters 20 --warmup 5 2>&1 | tail -3 | tee -a "$OUTDIR/summary.txt"
log "6b. the same, torch.compile on"
timeout 300 python3 benchmarks/train_throughput.py --device cuda --backbone iresnet50 iresnet100 --head arcface \
  --classes 93431 --batch 128 --dtype bf16 --compile on --iters 20 --warmup 3 2>&1 | tail -3 | tee -a "$OUTDIR/summary.txt"
log done
