"""CPU mode of bench/device_check.sh: the script's step runner, logs, summary and archive work (the fast steps; the
GPU test bodies run in CPU mode through tests/test_gpu.py itself)."""

from __future__ import annotations

import os
import subprocess
import tarfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_device_check_cpu_mode_writes_summary_and_archive(tmp_path):
    out, work = tmp_path / "out", tmp_path / "work"
    env = {
        **os.environ,
        "OUT": str(out),
        "DEVICE_CHECK_WORK": str(work),
        "DEVICE_CHECK_STEPS": "install,versions,broken",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        ["bash", str(REPO / "bench" / "device_check.sh"), "--cpu"], env=env, capture_output=True, text=True,
        timeout=120, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    summary = (out / "summary.md").read_text()
    assert "| install | ok |" in summary and "| versions | ok |" in summary
    assert "pytest_gpu" not in summary  # not selected
    assert "transformers" in (work / "versions.log").read_text()
    with tarfile.open(out / "device_check.tar.gz") as archive:
        assert "./versions.log" in archive.getnames()
    assert sorted(p.name for p in out.iterdir()) == ["device_check.tar.gz", "summary.md"]  # the tool returns <= 8
