"""`train.precision=auto` picks bf16 autocast only where the hardware runs bf16 natively."""

import pytest
import torch

from hftransfer.training import runtime as common
from hftransfer.training.runtime import resolve_precision


@pytest.mark.parametrize(("native_bf16", "expected"), [(True, "bf16"), (False, "fp32")])
def test_auto_on_cpu_follows_native_bf16_support(monkeypatch, native_bf16, expected):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(common, "cpu_has_native_bf16", lambda: native_bf16)
    assert resolve_precision("auto") == expected


def test_explicit_precision_wins_over_the_hardware(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(common, "cpu_has_native_bf16", lambda: False)
    assert resolve_precision("bf16") == "bf16"
    monkeypatch.setattr(common, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("fp32") == "fp32"
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        resolve_precision("fp16")


def test_native_bf16_check_reads_the_cpu_flags(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False, raising=False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert common.cpu_has_native_bf16()
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert not common.cpu_has_native_bf16()
