"""`hftransfer compare`: train each planned run (a strategy, a variant or both) or reuse it, measure, write the report.

A run counts as finished only when `<report>/runs/<name>` exists with its results.json: training publishes that
folder by renaming `<s>.incomplete` at the very end, so an interrupted comparison resumes with the runs it
had not finished (those start over). A finished run is reused only if its saved recipe matches the plan.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path

from hftransfer.artifacts.layout import RECIPE_FILE, RESULTS_FILE, write_json
from hftransfer.compare.measure import measure_latency, train_in_subprocess
from hftransfer.compare.plan import CompareError, RunPlan, Variant, config_differences, plan_runs
from hftransfer.compare.plots import MISSING_NOTE, curve_gaps, plots_available, write_plots
from hftransfer.compare.report import RunRow, build_report, markdown
from hftransfer.config.recipe import load_config, save_config
from hftransfer.console import progress
from hftransfer.strategies import strategy_class

logger = logging.getLogger("hftransfer")

WORK_DIR = "work"
"""Per-run recipe (`<s>.yaml`), log (`<s>.log`), peak memory and load average (`<s>.measured.json`)."""
REPORT_MD, REPORT_JSON = "report.md", "report.json"


def is_finished(folder: Path) -> bool:
    return (folder / RESULTS_FILE).is_file() and (folder / RECIPE_FILE).is_file()


def run_comparison(
    recipe: str | Path | None,
    strategies: list[str] | None,
    overrides: list[str],
    report_dir: str | Path,
    in_process: bool = False,
    latency: bool = True,
    variants: list[Variant] | tuple[Variant, ...] = (),
) -> dict:
    """Run (or reuse) every planned run (strategies, variants or both: `plan.plan_runs`), then write report.md,
    report.json and the plots; returns report.json."""
    report_dir = Path(report_dir)
    plans = plan_runs(recipe, strategies, overrides, report_dir, variants)
    _check_reusable(plans)
    work = report_dir / WORK_DIR
    work.mkdir(parents=True, exist_ok=True)

    trained: set[str] = set()
    for plan in progress(plans, desc="compare", unit="run", min_steps=1, leave=True):
        stale = [d for d in plan.depends_on if d in trained]
        if is_finished(plan.output_dir):
            if not stale:
                logger.info("compare: reusing the finished %s run in %s", plan.name, plan.output_dir)
                continue
            logger.info("compare: retraining %s, since %s was retrained", plan.name, ", ".join(stale))
        logger.info("compare: training %s -> %s", plan.name, plan.output_dir)
        _train(plan, work, in_process)
        trained.add(plan.name)

    rows = [_row(plan, work, reused=plan.name not in trained) for plan in plans]
    device, load = None, None
    if latency:
        load = _load_average()
        timings = measure_latency({row.name: Path(row.output_dir) for row in rows})
        load = [load, _load_average()]
        for row in rows:
            row.latency_ms = timings.get(row.name, {})
        import torch

        device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    first = plans[0].config
    meta = {
        "recipe": str(recipe) if recipe else None,
        "strategies": list(dict.fromkeys(plan.strategy for plan in plans)),
        "variants": {v.name: list(v.overrides) for v in variants},
        "overrides": list(overrides),
        "seed": first.train.seed,
        "in_process": in_process,
        "latency_device": device,
        "latency_load_average": load,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    report = build_report(rows, meta)
    plots, note = [], MISSING_NOTE
    gaps = curve_gaps({plan.name: plan.config.train.logging_steps for plan in plans}, rows)
    if plots_available():
        plots = write_plots(
            report_dir, report["runs"], {r.name: r.results.get("log_history") or [] for r in rows}, gaps
        )
        note = None
    report["plots"], report["plot_notes"] = plots, gaps
    write_json(report_dir / REPORT_JSON, report)
    (report_dir / REPORT_MD).write_text(markdown(report, plots, note, gaps))
    return report


def _load_average() -> float | None:
    """1-minute load average: on a shared machine it says how far timings are from quiet ones."""
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def _check_reusable(plans: list[RunPlan]) -> None:
    """Before anything trains: a finished run made with other settings would make the comparison unfair."""
    for plan in plans:
        if not is_finished(plan.output_dir):
            continue
        differences = config_differences(load_config(plan.output_dir / RECIPE_FILE), plan.config)
        if differences:
            raise CompareError(
                f"{plan.output_dir} was trained with other settings than this comparison asks for "
                f"({'; '.join(differences[:5])}). Delete that folder to retrain it, or choose another --out."
            )


def _train(plan: RunPlan, work: Path, in_process: bool) -> None:
    recipe = work / f"{plan.name}.yaml"
    recipe.parent.mkdir(parents=True, exist_ok=True)  # `<variant>/<strategy>` runs get a folder per variant
    save_config(plan.config, recipe)
    peak_rss, load = None, _load_average()
    if in_process:
        import torch

        from hftransfer.training import pipeline as training

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        training.train(plan.config)
    else:
        code, peak_rss = train_in_subprocess(recipe, work / f"{plan.name}.log")
        if code != 0:
            raise CompareError(
                f"The {plan.name} run failed (exit code {code}; its output is above and in "
                f"{work / plan.name}.log). Finished runs are kept: fix the cause and run compare again."
            )
    measured = {"peak_rss_bytes": peak_rss, "in_process": in_process, "load_average": [load, _load_average()]}
    write_json(work / f"{plan.name}.measured.json", measured)


def _row(plan: RunPlan, work: Path, reused: bool) -> RunRow:
    results = json.loads((plan.output_dir / RESULTS_FILE).read_text())
    measured_file = work / f"{plan.name}.measured.json"
    measured = json.loads(measured_file.read_text()) if measured_file.is_file() else {}
    return RunRow(
        strategy=plan.strategy,
        name=plan.name,
        variant=plan.variant,
        overrides=plan.overrides if plan.variant else [],
        starts_from=plan.config.model.name_or_path,
        output_dir=str(plan.output_dir),
        reused=reused,
        results=results,
        peak_rss_bytes=measured.get("peak_rss_bytes"),
        train_load_average=measured.get("load_average"),
        learning_rate=plan.config.train.learning_rate,
        notes=[*plan.notes, *strategy_class(plan.strategy).compare_notes(results)],
    )
