"""`hpconj check`: does a results folder still reproduce? (integrity, re-run, re-derive)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch
from rich.console import Console

from hpconj.executor import LocalExecutor
from hpconj.workers import Resources, split_units
from hpconj.integrity import check_integrity, integrity_report, print_report
from hpconj.repro import (
    CheckError,
    CheckReport,
    compare_analysis,
    compare_checkpoints,
    compare_derived_tables,
    compare_conclusions,
    compare_ids,
    compare_results,
    environment,
    environment_differences,
    load_stored,
    parse_sample,
    results_frame,
    select_trials,
)
from hpconj.sweep import SweepError, load_task, resolve_device
from hpconj.trials import group_cohorts


def run_check(folder: Path, *, integrity_only: bool, sample: str, rtol: float | None, atol: float | None,
              workers: int | None, chunk_size: int, console: Console) -> CheckReport:
    parse_sample(sample)  # a bad --trials is reported before anything else
    if integrity_only:
        return check_integrity(folder, console)
    manifest, report = integrity_report(folder)
    config, stored, stored_curves = load_stored(folder)
    planned = compare_ids(config, stored, report, folder)
    chosen = [planned[i] for i in select_trials(stored, sample) if i in planned]
    if not chosen:
        print_report(console, report, "no stored trial matches the stored config: nothing to re-run", folder,
                     verdict="nothing re-run")
        return report
    task = load_task(config)
    try:
        device = resolve_device("cpu" if not torch.cuda.is_available() else str(manifest.get("device", "auto")))
    except SweepError as exc:
        raise CheckError(str(exc)) from None
    # threads per worker as recorded: matmul results may depend on the thread count
    steps = sum(task.steps(config.budget, t.batch_size) for t in chosen)
    resources = Resources.choose(workers, manifest.get("threads_per_worker"), device, units=len(chosen),
                                 trial_steps=steps)
    current = environment(resources.threads, device)
    differences = environment_differences(manifest, current)
    report.exact = not differences
    report.warnings += [f"environment differs from the manifest: {d}" for d in differences]
    per_value = report.exact or rtol is not None or atol is not None
    rtol, atol = rtol or 0.0, atol or 0.0
    engine = str(manifest.get("engine", "cohort"))
    units = split_units(group_cohorts(chosen), {t.trial_id for t in chosen}, chunk_size, resources.workers)
    with LocalExecutor(engine, resources, chunk_size) as executor:
        results = list(executor.run(task.to(device), config.first_task, units, device))
    rerun, rerun_curves = results_frame(chosen, results, config.metric.name, list(config.sweep.task_axes()))
    report.rerun = len(rerun)
    if per_value:
        compare_results(stored, rerun, stored_curves, rerun_curves, report, rtol, atol, folder)
        compare_checkpoints(folder, chosen, results, report, rtol, atol)
    else:
        compare_conclusions(stored, rerun, stored_curves, rerun_curves, report)
    merged = pd.concat([stored[~stored["trial_id"].isin(rerun["trial_id"])], rerun[stored.columns]])
    compare_analysis(folder, stored, merged, report, exact=per_value and rtol == 0 and atol == 0)
    compare_derived_tables(folder, report)
    tolerance = ("bit-equal" if per_value and rtol == 0 and atol == 0 else f"rtol {rtol:g}, atol {atol:g}" if per_value
                 else "same conclusions: the environment differs")
    print_report(console, report, f"{report.rerun} of {len(stored)} trials re-run ({engine} engine, {tolerance})", folder)
    return report
