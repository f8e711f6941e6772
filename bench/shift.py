"""`hftransfer shift` on real pairs of text sets, offline, in the packaged MiniLM's features.

    python bench/shift.py [--rows 500] [--work outputs/bench-shift]

Pairs (each side a random sample of `--rows` rows):

- SST-2 train vs SST-2 train: two disjoint samples of the packaged train sample (the same distribution).
- SST-2 train vs SST-2 dev: GLUE's train split holds treebank phrases as well as sentences (9.5 words on
  average in the sample) while dev holds whole sentences (19.5 words): one source, differently cut.
- SST-2 dev vs Python docs: movie-review sentences vs sentences from CPython's own documentation
  (`pydoc_data.topics`, shipped with every CPython), a different domain.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from pydoc_data.topics import topics

import numpy as np

from hftransfer.analysis.features import DataSpec
from hftransfer.analysis.shift import format_shift, measure_shift
from hftransfer.config.recipe import DEMO_MODEL

TRAIN = "pkg:hftransfer/demo_data/sst2/train.tsv"
DEV = "pkg:hftransfer/demo_data/sst2/dev.tsv"


def python_doc_sentences() -> list[str]:
    """Prose sentences of 6-40 words from the Python docs' help topics (no code, headings or tables)."""
    text = " ".join(topics.values())
    sentences = []
    for paragraph in re.split(r"\n\s*\n", text):
        if paragraph.startswith(("   ", ">>>", "*", "=", "+", "-")):
            continue  # code samples, tables, headings
        flat = " ".join(paragraph.split())
        for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", flat):
            words = sentence.split()
            if 6 <= len(words) <= 40 and sum(c.isalpha() for c in sentence) > 0.7 * len(sentence):
                sentences.append(sentence)
    return sorted(set(sentences))


def split_tsv(path: str, first: Path, second: Path, seed: int = 0) -> None:
    """Two disjoint halves of a TSV (header kept on both)."""
    from hftransfer.config.locations import resolve_location

    header, *rows = Path(resolve_location(path)).read_text().splitlines()
    order = np.random.default_rng(seed).permutation(len(rows))
    half = len(rows) // 2
    first.write_text("\n".join([header, *(rows[i] for i in order[:half])]) + "\n")
    second.write_text("\n".join([header, *(rows[i] for i in order[half:])]) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=500, help="Rows per side.")
    parser.add_argument("--model", default=DEMO_MODEL)
    parser.add_argument("--permutations", type=int, default=500)
    parser.add_argument("--work", default="outputs/bench-shift")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    docs = work / "python-docs.txt"
    sentences = python_doc_sentences()
    docs.write_text("\n".join(sentences) + "\n")
    split_tsv(TRAIN, work / "sst2-train-a.tsv", work / "sst2-train-b.tsv")

    pairs = {
        "SST-2 train vs SST-2 train (disjoint halves)": (
            str(work / "sst2-train-a.tsv"),
            str(work / "sst2-train-b.tsv"),
        ),
        "SST-2 train vs SST-2 dev": (TRAIN, DEV),
        "SST-2 dev vs Python docs": (DEV, str(docs)),
    }
    reports = {}
    for title, (source, target) in pairs.items():
        report = measure_shift(
            DataSpec(source, max_rows=args.rows),
            DataSpec(target, max_rows=args.rows),
            args.model,
            permutations=args.permutations,
        )
        reports[title] = report
        print(f"\n## {title}\n{format_shift(report)}", flush=True)

    print(f"\n{args.rows} rows per side (Python docs: {len(sentences)} sentences to sample from), {args.model}")
    print("\n| pair | PAD [95% CI] | domain error | MMD^2 | MMD p | verdict |")
    print("|---|---:|---:|---:|---:|---|")
    for title, r in reports.items():
        pad, mmd = r["proxy_a_distance"], r["mmd"]
        print(
            f"| {title} | {pad['pad']:.2f} [{pad['ci_low']:.2f}, {pad['ci_high']:.2f}] | {pad['error']:.3f} | "
            f"{mmd['mmd2']:.4f} | {mmd['p_value']:.3g} | {r['interpretation'].split(' ')[0]} |"
        )
    (work / "summary.json").write_text(json.dumps(reports, indent=2) + "\n")
    print(f"Wrote {work / 'summary.json'}")


if __name__ == "__main__":
    main()
