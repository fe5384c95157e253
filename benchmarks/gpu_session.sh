#!/usr/bin/env bash
# One GPU session (about 6 minutes), prepared and tried on the CPU first:
# the GPU tests, the performance guide's GPU table, the GPU ablation and the
# CPU thread sweep, in order of importance. Each part has its own time limit,
# so a slow part never takes the later ones with it; all output is also
# written under $OUT (or /tmp/skbert-gpu-session).
#
#   BENCH_DATA=folder with sst2/train.tsv and imdb/train.tsv (default ../shared/data)
#   BENCH_MODEL=template model folder: tokenizer and configuration (default: bundled)
#   SCALE=small   a quick dry run (a few texts) to check the script itself
set -u
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
O="${OUT:-/tmp/skbert-gpu-session}"
mkdir -p "$O"
PY="${PYTHON:-python3}"
DATA=(--data-home "${BENCH_DATA:-../shared/data}")
MODEL=()
[ -n "${BENCH_MODEL:-}" ] && MODEL=(--model "$BENCH_MODEL")
if [ "${SCALE:-full}" = small ]; then
  N_SHORT=200 N_LONG=20 CPU_SHORT=100 CPU_LONG=10
else
  N_SHORT=10000 N_LONG=1500 CPU_SHORT=1000 CPU_LONG=100
fi
quiet() { grep -vE "Loading weights|Writing model|TruncationWarning|return self\._finish|^\s*$"; }

{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1 || true
  lscpu | grep -E "Model name|^CPU\(s\)|Thread\(s\) per core|Socket"
  echo "bf16 flags: $(lscpu | grep -o 'amx_bf16\|avx512_bf16' | sort -u | tr '\n' ' ')"
  "$PY" -c "import torch, transformers, tokenizers, sentence_transformers as st; \
print('torch', torch.__version__, 'transformers', transformers.__version__, \
'tokenizers', tokenizers.__version__, 'sentence-transformers', st.__version__)"
} 2>&1 | tee "$O/machine.txt"

echo "== 1. tests on the GPU"
timeout 100 "$PY" -m pytest -q -p no:cacheprovider -o addopts="" \
  tests/model/test_precision.py tests/model/test_encoder.py tests/model/test_runtime.py \
  tests/extraction/test_batches.py -k "gpu or varlen or precision or reduced or stacked or batches" \
  2>&1 | tail -25 | tee "$O/tests.txt"

echo "== 2. GPU table (seeded MiniLM and BERT-base shapes, max_length 256)"
timeout 240 "$PY" -W ignore benchmarks/throughput.py --device cuda "${DATA[@]}" "${MODEL[@]}" \
  --synthetic minilm,bert-base --n-short $N_SHORT --n-long $N_LONG --max-length 256 \
  --repeats 2 --stat best --no-early-exit \
  --methods st-b32,st-b256,st-fp16-b256,skbert,skbert-fp16,skbert-bf16,skbert-fp16-b2048t131072 \
  --tokenizers-parallelism true,false --serial-methods st-b256,st-fp16-b256,skbert,skbert-fp16 \
  --json "$O/gpu.json" 2>&1 | quiet | tee "$O/gpu.txt"

echo "== 3. GPU ablation"
for shape in minilm bert-base; do
  corpus=short; [ $shape = bert-base ] && corpus=long
  n=$N_SHORT; [ $corpus = long ] && n=$N_LONG
  timeout 60 "$PY" -W ignore benchmarks/gpu_ablation.py "${DATA[@]}" "${MODEL[@]}" \
    --shape $shape --corpus $corpus --n-texts $n 2>&1 | quiet
done | tee "$O/ablation.txt"

echo "== 4. CPU threads (MiniLM shape, no GPU)"
for threads in 2 8 16; do
  extra=""; [ $threads = 2 ] && extra=",skbert-bf16"
  CUDA_VISIBLE_DEVICES="" timeout 60 "$PY" -W ignore benchmarks/throughput.py --device cpu \
    "${DATA[@]}" "${MODEL[@]}" --threads $threads --synthetic minilm \
    --n-short $CPU_SHORT --n-long $CPU_LONG --max-length 256 --repeats 2 --stat best \
    --no-early-exit --methods st-b32,skbert,skbert-b64t1024,skbert-b512t16384$extra \
    --json "$O/cpu$threads.json" 2>&1 | quiet
done | tee "$O/cpu.txt"
date -u
