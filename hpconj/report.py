"""From a results folder to its answer: optima.csv, shifts.csv, summary.md (and the plots' data).

Compute first, draw second: `analyse` returns DataFrames; `hpconj.plots` only draws them.
noise_scale.csv (the gradient noise scale per seed) is optional: folders written before it
existed, or with noise_scale.enabled false, are analysed without it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from hpconj.analysis import (
    mean_noise_scale,
    noise_scale_text,
    slice_keys,
    noise_sentence,
    noise_summary,
    optima,
    shift_sentences,
    shifts,
    slice_curves,
)
from hpconj.axes import AXES, axes_of
from hpconj.config import ConfigError, config_from_dict
from hpconj.folder import (BEST_MOMENTUM_FILE, CHECKPOINT_REQUIRED, CLAIMS_FILE, CHECKPOINTS_FILE, NOISE_END_FILE,
                           NOISE_END_REQUIRED, CONFIG_FILE, CRITICAL_FILE, CURVES_FILE,
                           CURVE_REQUIRED, NOISE_FILE, NOISE_REQUIRED, OPTIMA_FILE, OPTIMA_TIME_FILE, SHIFTS_FILE,
                           SHIFTS_TIME_FILE, SUMMARY_FILE, TARGET_FILE, TRIALS_FILE, FolderError, read_config_data, read_manifest,
                           read_optional, read_trials, record_hashes, record_problems, refuse_if_busy, write_atomic,
                           writer_lock)
from hpconj.claims import claims_markdown, claims_table
from hpconj.records import DONE_STATUSES, OK
from hpconj.training_time import (best_momentum, checkpoint_trials, conjugacy_flags, critical_batch,
                                  critical_sentences, default_target, fastest_batch, optima_over_time, time_to_target)


class ReportError(ValueError):
    """A folder that holds no readable sweep results (bad input, exit status 2)."""


@dataclass(frozen=True)
class Results:
    folder: Path
    trials: pd.DataFrame
    curves: pd.DataFrame
    config: dict[str, Any]
    noise: pd.DataFrame = field(default_factory=pd.DataFrame)  # noise_scale.csv; empty when absent
    warnings: tuple[str, ...] = ()  # disagreements with manifest.json the user accepted
    checkpoints: pd.DataFrame = field(default_factory=pd.DataFrame)  # checkpoints.csv; empty when absent
    noise_end: pd.DataFrame = field(default_factory=pd.DataFrame)  # noise_scale_end.csv; empty when absent


@dataclass(frozen=True)
class Frames:
    curves: pd.DataFrame  # slice curves: seed-mean metric per slice and lr
    optima: pd.DataFrame
    shifts: pd.DataFrame
    training: pd.DataFrame  # training curves at the best grid lr of each slice
    meta: dict[str, str]
    noise: pd.DataFrame = field(default_factory=pd.DataFrame)  # analysis.noise_summary: per seed + mean
    warnings: tuple[str, ...] = ()  # disagreements with manifest.json the user accepted
    # over training time (hpconj.training_time; empty without budget.checkpoints)
    optima_time: pd.DataFrame = field(default_factory=pd.DataFrame)
    shifts_time: pd.DataFrame = field(default_factory=pd.DataFrame)
    targets: pd.DataFrame = field(default_factory=pd.DataFrame)
    critical: pd.DataFrame = field(default_factory=pd.DataFrame)
    best_momentum: pd.DataFrame = field(default_factory=pd.DataFrame)  # with more than one momentum
    noise_end: pd.DataFrame = field(default_factory=pd.DataFrame)  # noise_summary at the end of training
    search: tuple[str, ...] = ()  # how a searched sweep chose its lrs (search_lines)
    claims: pd.DataFrame = field(default_factory=pd.DataFrame)  # the verdicts of `expect:` (hpconj.claims)


def result_folders(paths: list[Path]) -> list[Path]:
    """Each path itself if it holds trials.csv, else every sub-folder that does."""
    found: list[Path] = []
    for path in paths:
        if not path.is_dir():
            raise ReportError(f"{path}: no such results folder")
        if (path / TRIALS_FILE).is_file():
            found.append(path)
            continue
        inside = sorted(p.parent for p in path.glob("*/trials.csv"))
        if not inside:
            refuse_if_busy(path)  # a sweep writes trials.csv when it ends
            raise ReportError(f"{path}: no trials.csv here or in its sub-folders (run hpconj sweep first)")
        found.extend(inside)
    return found


def load_results(folder: Path) -> Results:
    """The folder's records, every column checked: ReportError naming the file (and column and line)."""
    try:
        trials = read_trials(folder)
        curves = read_optional(folder / CURVES_FILE, CURVE_REQUIRED)
        config = read_config_data(folder) if (folder / CONFIG_FILE).is_file() else {}
        noise = read_optional(folder / NOISE_FILE, NOISE_REQUIRED)
        checkpoints = read_optional(folder / CHECKPOINTS_FILE, CHECKPOINT_REQUIRED)
        noise_end = read_optional(folder / NOISE_END_FILE, NOISE_END_REQUIRED)
    except FolderError as exc:
        raise ReportError(str(exc)) from None
    return Results(folder, trials, curves, config, noise, checkpoints=checkpoints, noise_end=noise_end)


def verified_results(folder: Path, accept_unverified: bool) -> Results:
    """The folder's records after checking them against manifest.json (folder.record_problems).

    A disagreement is one line and ReportError (nothing gets written) unless the user accepts it,
    in which case every problem travels with the results and is printed atop summary.md.
    """
    try:
        manifest = read_manifest(folder)
    except FolderError as exc:
        if not accept_unverified:
            raise ReportError(f"{exc}; cannot verify the results (pass --accept-unverified to analyse them anyway)") from None
        manifest = None
    results = load_results(folder)
    if manifest is None:
        return replace(results, warnings=(f"{folder / 'manifest.json'}: missing or damaged; results not verified",))
    try:
        config = config_from_dict(results.config, label=str(folder / CONFIG_FILE))
    except ConfigError as exc:
        raise ReportError(f"{folder / 'config.yaml'}: not a valid config ({exc.lines[0]})") from None
    problems = record_problems(folder, manifest, results.trials, config)
    if problems and not accept_unverified:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise ReportError(f"{folder}: the results do not match manifest.json: {problems[0]}{more}; nothing written "
                          "(hpconj check --integrity lists them; pass --accept-unverified to analyse them anyway)")
    return replace(results, warnings=tuple(problems))


def describe(config: dict[str, Any]) -> dict[str, str]:
    """Task, optimizer, budget and metric in words, for titles and summary.md."""
    task = config.get("task", {})
    model = task.get("model", "?")
    data = task.get("data", {})
    data_name = data.get("path") or data.get("target") or data.get("name", "?") if isinstance(data, dict) else str(data)
    if model == "quadratic":
        text = f"noisy quadratic (d = {task.get('dim')}, h ∈ [{task.get('h_min'):g}, {task.get('h_max'):g}])"
    elif model in ("mlp", "deep_linear"):
        sweep = config.get("sweep", {})
        shape = " ".join(f"{k} {task[k] if k in task else '/'.join(map(str, sweep.get(k) or ['?']))}"
                         for k in ("width", "depth"))
        text = f"{model} {shape} on {Path(str(data_name)).name}"
    else:
        text = f"{model} on {Path(str(data_name)).name}"
    budget = {k: v for k, v in config.get("budget", {}).items() if v is not None and k != "checkpoints"}
    budget_text = ", ".join(f"{v:g} {k}" for k, v in budget.items()) or "?"
    marks = config.get("budget", {}).get("checkpoints")
    if marks is not None:
        budget_text += f", {marks if isinstance(marks, int) else len(marks)} checkpoints"
    b_ref = config.get("reference_batch_size")
    return {
        "name": str(config.get("name", "")),
        "task": text,
        "optimizer": str(config.get("optimizer", "?")),
        "budget": budget_text,
        "metric": str(config.get("metric", {}).get("name", "metric")),
        "reference_batch_size": "" if b_ref is None else str(b_ref),
    }


def judged_claims(config: dict[str, Any], frames: Any) -> pd.DataFrame:
    """The config's `expect:` claims judged on these frames (hpconj.claims); empty without claims."""
    if not config.get("expect"):
        return pd.DataFrame()
    from hpconj.config import Claim

    return claims_table([Claim.model_validate(c) for c in config["expect"]], frames)


def search_lines(results: Results) -> tuple[str, ...]:
    """How the lrs were chosen, for summary.md: the grid, or the search with its trials per slice and
    the slices a limit stopped (hpconj.search, re-derived from the stored results)."""
    lr = results.config.get("sweep", {}).get("lr", {})
    if not isinstance(lr, dict) or "search" not in lr:
        return ()
    from hpconj.config import ConfigError, config_from_dict
    from hpconj.search import describe as describe_search, planned_trials

    try:
        config = config_from_dict(results.config)
    except ConfigError:
        return ()
    done = results.trials[results.trials["status"].isin(DONE_STATUSES)]
    plan = planned_trials(config, dict(zip(done["trial_id"], done["metric"].astype(float))))
    slices = results.trials.groupby(slice_keys(results.trials))["lr"].nunique()
    lines = [f"Learning rates: {describe_search(config.lr_search)}. {len(results.trials):,} trials; "
             f"{slices.mean():.1f} lrs per slice on average ({slices.min()}–{slices.max()}), in up to {plan.rounds} "
             "rounds. The optimum of a slice is estimated from its own lrs as from a grid's."]
    if plan.stopped:
        lines.append("A limit stopped the search of " + "; ".join(plan.stopped) + ".")
    return tuple(lines)


def analyse(results: Results) -> Frames:
    trials = results.trials
    curve_frame = slice_curves(trials)
    optimum = optima(trials)
    shift = shifts(trials, optimum)
    frames = Frames(curve_frame, optimum, shift, training_at_optimum(trials, results.curves, optimum),
                    describe(results.config), noise_summary(results.noise), results.warnings,
                    best_momentum=best_momentum(trials, optimum), noise_end=noise_summary(results.noise_end),
                    search=search_lines(results))
    if not results.checkpoints.empty:
        frames = replace(frames, **over_time(results, optimum))
    frames = replace(frames, claims=judged_claims(results.config, frames))
    flags = conjugacy_flags(optimum, trials, frames.critical)
    if not flags.empty:  # where the argument for conjugacy does not apply, per slice (training_time)
        optimum = optimum.merge(flags, on=slice_keys(optimum), how="left")
        frames = replace(frames, optima=optimum)
    return frames


def over_time(results: Results, optimum: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The optimum at every checkpoint, time to target and the critical batch size (training_time)."""
    metric = results.config.get("metric", {})
    frame = checkpoint_trials(results.trials, results.checkpoints, str(metric.get("name", "val_loss")))
    best, shift = optima_over_time(frame)
    target = metric.get("target")
    target = float(target) if target is not None else default_target(results.trials)
    targets, samples = time_to_target(frame, target)
    return {"optima_time": best, "shifts_time": shift, "targets": targets,
            "critical": critical_batch(targets, samples, optimum)}


def training_at_optimum(trials: pd.DataFrame, curves: pd.DataFrame, optimum: pd.DataFrame) -> pd.DataFrame:
    """Loss curves (every seed) of the grid lr nearest each slice's optimum."""
    keys = slice_keys(trials)
    columns = keys + ["lr", "seed", "step", "examples", "train_loss"]
    if curves.empty or optimum.empty:
        return pd.DataFrame(columns=columns)
    picked = []
    for _, row in optimum[np.isfinite(optimum["log2_lr_opt"])].iterrows():
        mask = np.logical_and.reduce([trials[k] == row[k] for k in keys]) & (trials["status"] == OK)
        candidates = trials[mask]
        if candidates.empty:
            continue
        nearest = candidates.loc[(np.log2(candidates["lr"]) - row["log2_lr_opt"]).abs().idxmin(), "lr"]
        picked.append(candidates[candidates["lr"] == nearest])
    if not picked:
        return pd.DataFrame(columns=columns)
    chosen = pd.concat(picked)[keys + ["lr", "seed", "trial_id"]]
    merged = chosen.merge(curves, on="trial_id")
    return merged[columns].sort_values(keys + ["seed", "step"]).reset_index(drop=True)


def summary_markdown(frames: Frames) -> str:
    """The two tables and one sentence per parameterization."""
    meta = frames.meta
    lines = [f"# {meta['name']}: how far does the optimal learning rate move?", "",
             f"{meta['task']}; optimizer {meta['optimizer']}; budget {meta['budget']}; metric {meta['metric']} "
             f"(seed mean); B_ref = {meta['reference_batch_size'] or '–'}.", ""]
    if frames.warnings:
        lines += ["> **Unverified results.** These tables were computed with --accept-unverified from records that "
                  "do not match manifest.json:", ">"]
        lines += [f"> - {w}" for w in frames.warnings] + [""]
    for sentence in frames.search:
        lines += [sentence, ""]
    for sentence in shift_sentences(frames.shifts, frames.optima):
        lines += [sentence, ""]
    lines += ["## Optima", "", "lr* is sub-grid (parabola in log2 lr); [lo, hi] a 95% bootstrap interval over seeds; "
              "≤/≥ mark an optimum at the edge of the grid (a bound, not a value); lr_div is the smallest lr of the "
              "grid at which a seed diverged, with its distance above lr* in octaves (– when none did).", ""]
    axes = axes_of(frames.optima) if not frames.optima.empty else ["batch_size", "momentum"]
    lines.append(f"| parameterization | {' | '.join(AXES[a].symbol for a in axes)} | lr* | log2 lr* | interval (log2) "
                 "| metric | seeds | lr_div (octaves above lr*) |")
    lines.append(f"|---|{'---:|' * len(axes)}---:|---:|---|---:|---:|---:|")
    for _, r in frames.optima.iterrows():
        at = " | ".join(AXES[a].text(r[a]) for a in axes)
        edge = _divergence_text(r)
        if not np.isfinite(r["log2_lr_opt"]):
            lines.append(f"| {r['parameterization']} | {at} | all diverged | | | | {r['n_seeds']} | {edge} |")
            continue
        bound = "" if not r["at_edge"] else ("≤ " if _is_low_edge(frames.curves, r) else "≥ ")
        lines.append(
            f"| {r['parameterization']} | {at} | {bound}{r['lr_opt']:.3g} | "
            f"{bound}{r['log2_lr_opt']:.2f} | {interval_text(r['lr_lo'], r['lr_hi'])} | "
            f"{r['metric_opt']:.4g} | {r['n_seeds']} | {edge} |"
        )
    more = [f"{AXES[a].abscissa} ({AXES[a].words})" for a in axes
            if a not in ("batch_size", "momentum") and not AXES[a].categorical]
    against = ", ".join(["log2 B (batch size)", *more]) + " or log2(1 − β) (momentum)"
    reference = "the smallest value of the axis" if more else "the smallest B (or β)"
    lines += ["", "## Shifts", "", f"slope of log2 lr* against {against}; shift = total move in octaves; regret = "
              f"relative excess of the metric when the lr tuned at {reference} is reused.", ""]
    lines.append("| parameterization | axis | at | slope | 95% interval | shift (octaves) | regret max | regret mean | slices | edge |")
    lines.append("|---|---|---|---:|---|---:|---:|---:|---:|---:|")
    for _, r in frames.shifts.iterrows():
        categorical = r["axis"] in AXES and AXES[r["axis"]].categorical
        slope = "–" if categorical else f"{r['slope']:.2f}"
        interval = (f"[{r['shift_lo']:+.2f}, {r['shift_hi']:+.2f}] (shift)" if categorical
                    else f"[{r['slope_lo']:.2f}, {r['slope_hi']:.2f}]")
        lines.append(
            f"| {r['parameterization']} | {r['axis']} | {r['fixed']} | {slope} | "
            f"{interval} | {r['shift_octaves']:+.2f} | {_percent(r['regret_max'])} | "
            f"{_percent(r['regret_mean'])} | {r['n_slices']} | {r['n_edge']} |"
        )
    lines += claims_markdown(frames.claims)
    lines += noise_markdown(frames)
    lines += time_markdown(frames)
    lines += momentum_markdown(frames)
    return "\n".join(lines) + "\n"


def momentum_markdown(frames: Frames) -> list[str]:
    """The best momentum per batch size, and the slices where the argument for conjugacy fails."""
    lines: list[str] = []
    if not frames.best_momentum.empty:
        table = frames.best_momentum
        axes = [c for c in table.columns if c in AXES]
        lines += ["## The best momentum", "", "Per batch size, the momentum whose slice reaches the lowest metric, "
                  "its lr*, and how often it wins over bootstrap resamples of the seeds (with the 95% range of "
                  "the winning β).", ""]
        lines.append(f"| parameterization | {' | '.join(AXES[a].symbol for a in axes)} | best β | lr* | metric "
                     "| wins | β range |")
        lines.append(f"|---|{'---:|' * len(axes)}---:|---:|---:|---:|---|")
        for _, r in table.iterrows():
            lines.append(f"| {r['parameterization']} | {' | '.join(AXES[a].text(r[a]) for a in axes)} | "
                         f"{r['best_momentum']:g} | {r['lr_opt']:.3g} | {r['metric_opt']:.4g} | "
                         f"{100 * r['beta_share']:.0f}% | [{r['beta_lo']:g}, {r['beta_hi']:g}] |")
        lines.append("")
    fastest = fastest_batch(frames.targets)
    if fastest:
        lines += ["The batch size that reaches the target first, for a budget of steps and for one of examples:", ""]
        lines += [f"- {sentence}" for sentence in fastest] + [""]
    if "why" in frames.optima.columns and frames.optima["why"].notna().any():
        flagged = frames.optima[frames.optima["why"].notna()]
        lines += ["## Where conjugacy cannot hold", "", "Slices whose optimum is not set by gradient noise, so that "
                  "no reparameterization of lr against B or β is expected to hold it still:", ""]
        axes = [a for a in AXES if a in flagged.columns]
        for _, r in flagged.iterrows():
            at = ", ".join(f"{AXES[a].symbol} = {AXES[a].text(r[a])}" for a in axes)
            lines.append(f"- {r['parameterization']}, {at}: {r['why']}")
        lines.append("")
    return lines


def time_markdown(frames: Frames) -> list[str]:
    """Over training time: how lr* moves with T, steps to the target per batch size, and the
    critical batch size beside B_noise and B_simple (nothing without checkpoints)."""
    if frames.targets.empty and frames.optima_time.empty:
        return []
    lines = ["## Over training time", ""]
    along = frames.shifts_time[frames.shifts_time["axis"] == "checkpoint"] if not frames.shifts_time.empty else None
    if along is not None and not along.empty:
        lines += ["The metric at each checkpoint is a sweep of its own (a constant-lr run's prefix is a shorter "
                  "run); slope of log2 lr* against log2 T, examples seen:", ""]
        lines.append("| parameterization | at | slope | 95% interval | shift (octaves) | slices |")
        lines.append("|---|---|---:|---|---:|---:|")
        for _, r in along.iterrows():
            if not np.isfinite(r["slope"]):
                lines.append(f"| {r['parameterization']} | {r['fixed']} | – | too few interior optima | – | "
                             f"{r['n_slices']} |")
                continue
            lines.append(f"| {r['parameterization']} | {r['fixed']} | {r['slope']:.2f} | "
                         f"[{r['slope_lo']:.2f}, {r['slope_hi']:.2f}] | {r['shift_octaves']:+.2f} | {r['n_slices']} |")
        lines.append("")
    if not frames.targets.empty:
        target = float(frames.targets["target"].iloc[0])
        lines += [f"Time to target (Shallue et al. 2018): the fewest examples over the lr grid to reach "
                  f"{frames.meta.get('metric', 'metric')} ≤ {target:.4g}, interpolated between checkpoints; "
                  "≤ marks a target already reached at the first checkpoint (a bound).", ""]
        axes = [c for c in frames.targets.columns if c in AXES]
        lines.append(f"| parameterization | {' | '.join(AXES[a].symbol for a in axes)} | examples | 95% interval "
                     "| steps | lr |")
        lines.append(f"|---|{'---:|' * len(axes)}---:|---|---:|---:|")
        for _, r in frames.targets.iterrows():
            at = " | ".join(AXES[a].text(r[a]) for a in axes)
            bound = "≤ " if r["bound"] else ""
            reached = np.isfinite(r["examples_to_target"])
            lines.append(f"| {r['parameterization']} | {at} | {bound}{r['examples_to_target']:.4g} | "
                         f"{interval_text(r['examples_lo'], r['examples_hi'], log=False)} | "
                         f"{bound}{r['steps_to_target']:.4g} | {r['lr_at_target']:.3g} |" if reached else
                         f"| {r['parameterization']} | {at} | not reached | | | |")
        lines.append("")
    if not frames.critical.empty:
        b_simple = mean_noise_scale(frames.noise)
        lines += ["Critical batch size (McCandlish et al. 2018): S(B) = S_min + E_min/B fitted to the steps to "
                  "target, B_crit = E_min/S_min; B_noise from lr*(B) = lr_max/(1 + B_noise/B) fitted to the final "
                  "optima.", ""]
        for sentence in critical_sentences(frames.critical, b_simple, mean_noise_scale(frames.noise_end)):
            lines += [sentence, ""]
    return lines


def noise_markdown(frames: Frames) -> list[str]:
    """The "Gradient noise scale" section: B_simple per seed and over seeds; nothing when unmeasured."""
    noise = frames.noise
    if noise is None or noise.empty:
        return []
    lines = ["", "## Gradient noise scale", "",
             "B_simple = tr Σ / |G|² of the initial model (Σ: per-example gradient covariance, G: the full gradient), "
             "from per-example gradients; unbiased estimates of tr Σ and |G|², and over seeds the ratio of their "
             "means.", ""]
    batch_sizes = sorted(float(b) for b in frames.optima["batch_size"].unique()) if not frames.optima.empty else []
    lines += [noise_sentence(noise, batch_sizes), ""]
    lines += _noise_table(noise)
    end = frames.noise_end
    if end is not None and not end.empty:
        lines += ["", f"At the end of training (on the final model of each seed's best trial at the smallest batch "
                      f"size and momentum of the first parameterization; the noise scale grows as the loss falls): "
                      f"B_simple ≈ {noise_scale_text(mean_noise_scale(end))}, against "
                      f"{noise_scale_text(mean_noise_scale(noise))} at initialisation.", ""]
        lines += _noise_table(end)
    return lines


def _noise_table(summary: pd.DataFrame) -> list[str]:
    """analysis.noise_summary as a Markdown table: a row per seed and the mean."""
    lines = ["| seed | examples | tr Σ | \\|G\\|² | B_simple |", "|---|---:|---:|---:|---:|"]
    for _, r in summary.iterrows():
        seed = "mean" if r["row"] == "mean" else str(r["seed"])
        examples = "" if pd.isna(r["examples"]) else str(r["examples"])
        lines.append(f"| {seed} | {examples} | {r['trace_sigma']:.4g} | {r['grad_norm_sq']:.4g} | "
                     f"{noise_scale_text(r['b_simple'])} |")
    return lines


def interval_text(lo: float, hi: float, log: bool = True) -> str:
    """[log2 lo, log2 hi] (or [lo, hi]), or – where there is no interval (a single seed)."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "–"
    return f"[{np.log2(lo):.2f}, {np.log2(hi):.2f}]" if log else f"[{lo:.4g}, {hi:.4g}]"


def _percent(value: float) -> str:
    if np.isinf(value):
        return "diverges"
    return "–" if not np.isfinite(value) else f"{100 * value:.0f}%"


def _divergence_text(row: pd.Series) -> str:
    """'0.5 (+1.3)': the smallest lr that diverged and its octaves above lr*; '–' when none did."""
    lr_div = row.get("lr_div", math.nan)
    if not np.isfinite(lr_div):
        return "–"
    gap = row.get("div_gap", math.nan)
    return f"{lr_div:.3g} ({gap:+.1f})" if np.isfinite(gap) else f"{lr_div:.3g}"


def _is_low_edge(curves: pd.DataFrame, row: pd.Series) -> bool:
    mask = np.logical_and.reduce([curves[k] == row[k] for k in slice_keys(curves)])
    return bool(np.isclose(row["log2_lr_opt"], curves[mask]["log2_lr"].min()))


def plot_folder(folder: Path, accept_unverified: bool, formats: tuple[str, ...] = ("png", "svg")
                ) -> tuple[Frames, list[Path]]:
    """`hpconj plot` on one folder: verify, analyse, write the tables and figures, record their hashes.

    Only a folder hpconj made (its manifest readable) is written to, under its lock; only the
    files written here get their hashes recorded (the records keep theirs: folder.record_hashes).
    """
    from hpconj.plots import write_figures

    read_manifest(folder)  # FolderError: plot writes only into folders hpconj made, flag or not
    if (folder / "plots").exists() and not (folder / "plots").is_dir():
        raise ReportError(f"{folder / 'plots'}: exists and is not a folder; nothing written")
    with writer_lock(folder):
        frames = analyse(verified_results(folder, accept_unverified))
        written: list[Path] = []
        try:
            written += write_tables(frames, folder)
            written += write_figures(frames, frames.meta, folder, formats)
        except OSError as exc:
            raise ReportError(f"{folder}: cannot write the analysis ({exc.strerror or exc}: {exc.filename}); "
                              f"{len(written)} files written before it") from None
        finally:  # what was written is recorded, so --integrity never flags hpconj's own output
            if written:
                record_hashes(folder, [str(p.relative_to(folder)) for p in written])
    return frames, written


def write_tables(frames: Frames, folder: Path) -> list[Path]:
    """optima.csv, shifts.csv and summary.md in the results folder; with checkpoints also
    optima_over_time.csv, shifts_over_time.csv, time_to_target.csv and critical_batch.csv."""
    paths = [folder / name for name in (OPTIMA_FILE, SHIFTS_FILE, SUMMARY_FILE)]
    write_atomic(paths[0], frames.optima.to_csv(index=False))
    write_atomic(paths[1], frames.shifts.to_csv(index=False))
    write_atomic(paths[2], summary_markdown(frames))
    for name, table in ((OPTIMA_TIME_FILE, frames.optima_time), (SHIFTS_TIME_FILE, frames.shifts_time),
                        (TARGET_FILE, frames.targets), (CRITICAL_FILE, frames.critical),
                        (BEST_MOMENTUM_FILE, frames.best_momentum), (CLAIMS_FILE, frames.claims)):
        if not table.empty:
            paths.append(folder / name)
            write_atomic(paths[-1], table.to_csv(index=False))
    return paths
