#!/usr/bin/env bash
# Every GPU check and benchmark of cosface in one script, ending in ONE table (OUTDIR/table.txt).
# A lent GPU machine has minutes: each stage runs under its own `timeout`, so a slow stage costs only
# itself, and every figure is printed as soon as it is measured (a `RESULT ...` line) and collected.
#
# Stages (pick with --stages; they run in the order given). The stage limits add up to ~30 minutes if
# every stage ran to its limit (expected: about 15); --deadline SECONDS caps the whole run: each
# stage's limit shrinks to the time left (20 s kept for the table) and a stage with under 15 s left is
# skipped, so the table always comes back, e.g.
#   --stages compiled,data,train,step,eval --deadline 480   then   --stages tests,iresnet --deadline 300
#   step    train-step images/s: eager / graph (CUDA graph), fp32 / bf16, batch 128 / 512 / 1024, and the
#           blocked head (class chunks) at batch 512
#   compiled the same step through torch.compile (Inductor), bf16 then fp32, batch 512 / 1024 / 128
#   data    >= 50k synthetic 112x112 faces (`cosface synth`, every core) packed to RecordIO (`cosface pack`),
#           plus an LFW-size synthetic evaluation set (13.5k images, 6,000 pairs)
#   loader  the input pipeline alone: CPU workers (ring loader) and GPU decoding (nvImageCodec)
#   train   real `cosface train` runs on the packed set (CUDA-graph step, bf16, batch 512, 14 workers):
#           2 epochs each, the second one timed: once per decoder, and compiled + graph (CPU decoding)
#   eval    LFW end to end (`cosface eval`: decode + embed + protocol) and `cosface embed` over a folder, as
#           commands (wall time, start-up included) and inside one process (benchmarks/eval_throughput.py)
#   tests   the CUDA tests (tests/gpu)
#   iresnet iresnet50/100 + ArcFace (93,431 classes, MS1MV3-size) train step, bf16, channels_last,
#           eager and compiled (not in the default list: add it, e.g. --stages step,tests,iresnet)
#
# Usage: bash benchmarks/gpu_check.sh [OUTDIR] [--stages a,b,...] [--deadline SECONDS] [--cpu]
#   --cpu   a dry run on a machine without a GPU: tiny sizes on the CPU, to check that every stage's
#           commands and arguments work (figures meaningless; GPU-only parts report "skipped").
# Wheels missing on the GPU machine (simplejpeg; nvImageCodec and its nvJPEG library for GPU decoding) are
# installed from .whl/ when present: fill it beforehand with `make gpu-wheels` and carry `.whl`.
set -u
OUTDIR=gpu_out; STAGES=step,compiled,data,loader,train,eval,tests; DRY=0; DEADLINE=0
while [ $# -gt 0 ]; do
  case "$1" in
    --stages) STAGES="$2"; shift 2;;
    --deadline) DEADLINE="$2"; shift 2;;
    --cpu) DRY=1; shift;;
    -*) echo "unknown option $1" >&2; exit 2;;
    *) OUTDIR="$1"; shift;;
  esac
done
mkdir -p "$OUTDIR"; OUTDIR=$(cd "$OUTDIR" && pwd)
PY=${PYTHON:-python3}
WORK=${WORK:-/tmp/cosface_gpu_check}; mkdir -p "$WORK"
RESULTS="$OUTDIR/results.txt"; : > "$RESULTS"

if [ $DRY = 0 ] && ls .whl/*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="/tmp/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="${PYTHONPATH:+$PYTHONPATH:}$PWD/src" PYTHONUNBUFFERED=1

if [ $DRY = 1 ]; then
  DEV=cpu; BATCHES="8"; DTYPES="fp32"; VARIANTS="eager graph"; IDS=20; PER=4; LFW_IDS=20; LFW_PER=2
  TRAIN_BATCH=8; WORKERS="0 2"; TRAIN_WORKERS=2; ITERS=1; WARM=1; EMBED_BATCH=16; CLASSES=100
else
  DEV=cuda; BATCHES="128 512 1024"; DTYPES="fp32 bf16"; VARIANTS="eager graph"; IDS=2560; PER=20; LFW_IDS=1500
  LFW_PER=9; TRAIN_BATCH=512; WORKERS="4 8 14"; TRAIN_WORKERS=14; ITERS=20; WARM=5; EMBED_BATCH=1024; CLASSES=10572
fi

# run_stage NAME SECONDS CMD...: the command under `timeout`, its output in OUTDIR/NAME.log (and on
# screen), its RESULT lines collected, and one STATUS line (ok / failed rc / timed out) with its time.
run_stage() {
  local name=$1 limit=$2; shift 2
  if [ "$DEADLINE" -gt 0 ]; then
    local left=$((DEADLINE - SECONDS - 20))
    if [ $left -lt 15 ]; then
      rm -f "$OUTDIR/$name.log"      # an older run's log in this OUTDIR must not pass for this run's figures
      echo "STATUS $name skipped (deadline: ${left}s left)" | tee -a "$RESULTS"; return
    fi
    [ $left -lt "$limit" ] && limit=$left
  fi
  echo "== $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$OUTDIR/$name.log"
  local rc=${PIPESTATUS[0]}
  grep -h '^RESULT ' "$OUTDIR/$name.log" >> "$RESULTS"
  local status=ok; [ $rc = 124 ] || [ $rc = 137 ] && status="timed out" || { [ $rc != 0 ] && status="failed rc=$rc"; }
  echo "STATUS $name $status $((SECONDS - t0))s" | tee -a "$RESULTS"
}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  $PY -c "import torch, os; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'cpus', os.cpu_count())"
  # which decoder data.decoder = "auto" takes here, and why not the GPU when it does not
  $PY -c "import torch; from cosface.data.gpu_decode import resolve_decoder
print('data.decoder auto ->', resolve_decoder('auto', torch.device('$DEV'), note=print))" 2>&1 | grep -v "ERROR\|Failed to load\|Note: If"
  uptime; } | tee "$OUTDIR/machine.txt"

# ---- stage: step ---------------------------------------------------------------------------------
stage_step() {
  run_stage step_eager_graph 120 $PY benchmarks/train_throughput.py --device $DEV --classes $CLASSES \
    --batch $BATCHES --dtype $DTYPES --variant $VARIANTS --optimizer fused --iters $ITERS --warmup $WARM
  # cuDNN's timed algorithm choice (train.cudnn_benchmark) against its heuristics, where the GPU is busy
  run_stage step_cudnn_benchmark 60 $PY benchmarks/train_throughput.py --device $DEV --classes $CLASSES \
    --batch $(echo $BATCHES | awk '{print $NF}') --dtype bf16 --variant eager graph --cudnn-benchmark off on \
    --optimizer fused --iters $ITERS --warmup $WARM
  [ $DRY = 0 ] && run_stage step_blocked_head 45 $PY benchmarks/train_throughput.py --device $DEV --classes $CLASSES \
    --batch 512 --dtype bf16 --variant eager graph --class-chunk 0 4096 --optimizer fused --iters $ITERS --warmup $WARM
}

# ---- stage: compiled -----------------------------------------------------------------------------
stage_compiled() {
  if [ $DRY = 0 ]; then
    # Compilation takes tens of seconds per shape: the most useful shapes first, the rest as time allows.
    run_stage step_compiled 150 $PY benchmarks/train_throughput.py --device $DEV --classes $CLASSES \
      --batch 512 1024 128 --dtype bf16 fp32 --variant compiled --optimizer fused --iters $ITERS --warmup $WARM
  else
    echo "STATUS step_compiled skipped (Inductor on a CPU takes minutes; tests/unit/test_step.py traces it)" | tee -a "$RESULTS"
  fi
}

# ---- stage: data ---------------------------------------------------------------------------------
SYN="$WORK/synth"; PACKED="$WORK/packed"
stage_data() {
  rm -rf "$SYN" "$PACKED"
  run_stage data_synth 90 $PY -m cosface synth "$SYN" --identities $IDS --images-per-identity $PER \
    --lfw-identities $LFW_IDS --lfw-images-per-identity $LFW_PER --quiet
  run_stage data_pack 60 $PY -m cosface pack "$SYN/train" -o "$PACKED" --quiet
}

# ---- stage: loader -------------------------------------------------------------------------------
stage_loader() {
  GPU_DECODE=""; [ $DRY = 0 ] && GPU_DECODE="--gpu-decode"
  run_stage loader 60 $PY benchmarks/train_throughput.py --device $DEV --batch $TRAIN_BATCH --loader-only \
    --loader "$PACKED" --workers $WORKERS $GPU_DECODE --loader-batches 40
}

# ---- stage: train --------------------------------------------------------------------------------
# train_run NAME DECODER LIMIT STEP-SETTINGS...: 2 epochs on the packed set; the second epoch's images/s is the figure.
train_run() {
  local name=$1 decoder=$2 limit=$3; shift 3
  local amp=bf16; [ $DRY = 1 ] && amp=none
  rm -rf "$WORK/run_$name"
  run_stage "train_$name" "$limit" $PY -m cosface train --data "$PACKED" --out "$WORK/run_$name" --no-progress \
    --set train.device=$DEV --set train.amp=$amp --set train.batch_size=$TRAIN_BATCH \
    --set data.workers=$TRAIN_WORKERS --set data.decoder=$decoder --set train.epochs=2 \
    --set checkpoint.save_start_epoch=2 --set train.log_every=20 "$@"
  $PY - "$WORK/run_$name/metrics.jsonl" "$name" <<'PY' | tee -a "$RESULTS"
import json, sys
try:
    epochs = [r for r in map(json.loads, open(sys.argv[1])) if r["type"] == "epoch"]
except OSError:
    epochs = []
for r in epochs:
    print(f"RESULT train run={sys.argv[2]} epoch={r['epoch']} img_s={r['images_per_s']:.0f} ms={r['step_time_ms']:.2f}")
PY
}
stage_train() {
  if [ $DRY = 0 ]; then
    train_run cpu_graph cpu 90 --set train.cuda_graph=true
    train_run gpu_graph gpu 90 --set train.cuda_graph=true
    # Inductor fuses the BatchNorm/PReLU/residual element-wise work the eager step is bound by; compiling
    # MobileFaceNet's forward and backward takes about a minute before the first step.
    train_run cpu_compiled_graph cpu 180 --set train.cuda_graph=true --set train.compile=true
  else
    train_run cpu_eager auto 90 --set optim.implementation=fused
  fi
}

# ---- stage: eval ---------------------------------------------------------------------------------
stage_eval() {
  CKPT=$(ls "$WORK"/run_*/checkpoints/*.pt 2>/dev/null | head -1)
  if [ -z "$CKPT" ]; then
    echo "STATUS eval skipped (no checkpoint: run the train stage first)" | tee -a "$RESULTS"
  else
    # timed: run a command, then print its wall time as `ELAPSED seconds` (decode + model + protocol, start-up included).
    TIMED=(-c "import subprocess, sys, time; t = time.perf_counter(); rc = subprocess.call(sys.argv[1:]); print(f'ELAPSED {time.perf_counter() - t:.3f}'); sys.exit(rc)")
    run_stage eval_lfw 60 $PY "${TIMED[@]}" $PY -m cosface eval --ckpt "$CKPT" --lfw "$SYN/lfw" --device $DEV \
      --batch-size $EMBED_BATCH --no-progress
    NIMG=$(find "$SYN/lfw/lfw_align_112" -name '*.jpg' | wc -l)
    run_stage eval_embed 60 $PY "${TIMED[@]}" $PY -m cosface embed --model "$CKPT" -o "$WORK/embed.npy" \
      --batch-size $EMBED_BATCH --device $DEV "$SYN/lfw/lfw_align_112"
    $PY - "$OUTDIR" "$NIMG" <<'PY' | tee -a "$RESULTS"
import re, sys
out, n = sys.argv[1], int(sys.argv[2])
for task, log in (("lfw_command_wall", "eval_lfw"), ("embed_command_wall", "eval_embed")):
    try:
        m = re.findall(r"^ELAPSED ([0-9.]+)", open(f"{out}/{log}.log").read(), re.M)
    except OSError:                       # the stage was skipped (deadline)
        continue
    if m:
        s = float(m[-1])
        print(f"RESULT eval task={task} images={n} img_s={n / s:.0f} seconds={s:.2f}")
PY
    # The same work inside one process, start-up (import, CUDA initialisation, model load) reported apart.
    run_stage eval_in_process 90 $PY benchmarks/eval_throughput.py --model "$CKPT" --lfw "$SYN/lfw" \
      --folder "$SYN/lfw/lfw_align_112" --device $DEV --batch-size $EMBED_BATCH --repeat 3
  fi
}

# ---- stage: tests --------------------------------------------------------------------------------
stage_tests() {
  run_stage tests 300 $PY -m pytest -q -p no:cacheprovider tests/gpu -rs
}

# ---- stage: iresnet ------------------------------------------------------------------------------
stage_iresnet() {
  if [ $DRY = 1 ]; then RBATCH=4; RCLASSES=100; RVARIANTS="eager"; else RBATCH=128; RCLASSES=93431; RVARIANTS="eager compiled"; fi
  run_stage iresnet_step 300 $PY benchmarks/train_throughput.py --device $DEV --backbone iresnet50 iresnet100 \
    --head arcface --classes $RCLASSES --batch $RBATCH --dtype bf16 --variant $RVARIANTS --optimizer fused \
    --iters $ITERS --warmup $WARM
}

# ---- run the stages, in the order --stages names them ------------------------------------------------
for st in ${STAGES//,/ }; do
  if declare -F "stage_$st" >/dev/null; then "stage_$st"; else echo "STATUS $st unknown stage" | tee -a "$RESULTS"; fi
done

# ---- the table -------------------------------------------------------------------------------------
$PY - "$RESULTS" <<'PY' | tee "$OUTDIR/table.txt"
import sys
rows = [l.split() for l in open(sys.argv[1]) if l.strip()]
def kv(parts):
    return dict(p.split("=", 1) for p in parts if "=" in p)
print(f"{'what':<10} {'configuration':<68} {'images/s':>10} {'ms/step or s':>13}")
for r in rows:
    if r[0] == "RESULT":
        d = kv(r[2:])
        what = r[1]
        rate = d.pop("img_s", "failed" if "failed" in r else "")
        ms = d.pop("ms", d.pop("seconds", ""))
        print(f"{what:<10} {' '.join(f'{k}={v}' for k, v in d.items()):<68} {rate:>10} {ms:>13}")
print()
for r in rows:
    if r[0] == "STATUS":
        print("stage", " ".join(r[1:]))
PY
