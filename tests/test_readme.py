"""The README's Library use snippets run as written (in order, one namespace), offline."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def _section(title: str) -> str:
    text = README.read_text()
    start = text.index(title)
    end = text.find("\n## ", start)
    return text[start:end]


@pytest.mark.slow
def test_library_use_snippets_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", _section("### Library use"), flags=re.S)
    assert len(blocks) == 3
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)
    run, student = namespace["run"], namespace["student"]
    assert run.metrics["accuracy"] > 0.6 and (tmp_path / "outputs" / "notebook" / "recipe.yaml").is_file()
    assert namespace["trainer"].evaluate()["eval_num_samples"] == 200
    assert student.results["distill"]["teacher"]["accuracy"] == pytest.approx(run.metrics["accuracy"], abs=0.2)
