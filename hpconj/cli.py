"""The `hpconj` command: thin typer commands over config, sweep and analysis.

Exit status: 0 success, 1 a failed check or an internal error, 2 bad input (one line, no
traceback unless --debug), 130 interrupted (everything finished so far is recorded).
"""
from __future__ import annotations

import functools
import logging
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from hpconj.engine import DEFAULT_CHUNK, ENGINES  # names only: torch is imported by the commands that train

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Measure how far the optimal learning rate moves with batch size and momentum.",
)
# Logs and pipes get 120 columns (rich's default of 80 wraps the tables); a terminal its own width.
out = Console(width=None if sys.stdout.isatty() else 120)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 120)
_state = {"debug": False}

ConfigArg = typer.Argument(..., help="The sweep config (YAML).", show_default=False)
DebugOpt = typer.Option(False, "--debug", help="Show tracebacks.")


class BadInput(Exception):
    """Raised by commands for bad input that is not a config error."""


def reports_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn known errors into one line and exit 2; unknown ones into one line and exit 1."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("debug"):
            _state["debug"] = True
        if _state["debug"]:
            logging.basicConfig(level=logging.INFO, format="hpconj: %(message)s")
        try:
            return command(*args, **kwargs)
        except typer.Exit:
            raise
        except _raised("hpconj.config.schema", "ConfigError") as exc:
            if _state["debug"]:
                raise
            for line in exc.lines:
                err.print(f"[red]error:[/red] {escape(line)}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except _known_errors() as exc:
            if _state["debug"]:
                raise
            err.print(f"[red]error:[/red] {escape(str(exc))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except Exception as exc:
            if _state["debug"]:
                raise
            err.print(f"[red]internal error:[/red] {type(exc).__name__}: {escape(str(exc))} (run with --debug for the traceback)",
                      highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


class _NeverRaised(Exception):
    """Stands for an error class whose module was never imported, so cannot have been raised."""


def _raised(module: str, name: str) -> type[Exception]:
    """The exception class `name` of `module` if that module is loaded, else _NeverRaised: a command
    that never imported the module cannot have raised its error, and importing it to find out would
    cost every command the start-up (torch, pandas) that keeping it out saves."""
    loaded = sys.modules.get(module)
    return getattr(loaded, name) if loaded is not None else _NeverRaised


def _known_errors() -> tuple[type[Exception], ...]:
    """Bad input found past the config: one line and exit status 2."""
    return (BadInput, _raised("hpconj.tasks.base", "TaskError"), _raised("hpconj.store", "StoreError"),
            _raised("hpconj.cost", "SweepError"), _raised("hpconj.report", "ReportError"),
            _raised("hpconj.integrity", "CheckError"), _raised("hpconj.folder", "FolderError"))


def load_config(path: Path) -> Any:
    from hpconj.config import load_config as load

    return load(path)


@app.callback()
def root(debug: bool = DebugOpt) -> None:
    _state["debug"] = debug


@app.command()
@reports_errors
def sweep(
    config_path: Path = ConfigArg,
    out_dir: Optional[Path] = typer.Option(None, "--out", help="Results folder [default: results/<name>]."),
    device: Optional[str] = typer.Option(None, "--device", help="Override the config: auto | cpu | cuda | cuda:N."),
    fresh: bool = typer.Option(False, "--fresh", help="Discard results already in the folder."),
    max_trials: Optional[int] = typer.Option(None, "--max-trials", min=1, help="Run at most N unfinished trials."),
    engine: str = typer.Option("cohort", "--engine", help="cohort (stacked, fast) | reference (one at a time)."),
    workers: Optional[int] = typer.Option(
        None, "--workers", min=1,
        help="Worker processes [default: one per core; 1 on CUDA]. With --executor ray: the most tasks at once "
             "(default: the cluster's CPUs; on CUDA 2 per GPU)."),
    threads: int = typer.Option(0, "--threads", min=0, help="Torch threads per worker [default: cores // workers]."),
    chunk_size: int = typer.Option(DEFAULT_CHUNK, "--chunk-size", min=1,
                                   help="Most trials trained as one stack (on CUDA also fitted to free memory)."),
    executor_kind: Optional[str] = typer.Option(
        None, "--executor", help="local (this machine) | ray (Ray tasks) (default: the config's executor: key, else local)."),
    address: Optional[str] = typer.Option(
        None, "--address", help="With --executor ray: a running Ray cluster, host:port as `ray start --head` prints it "
                                "(default: $RAY_ADDRESS, else start a local Ray instance)."),
    yes: bool = typer.Option(False, "--yes", help="Run a sweep above the size limit (more than 1,000,000 trials, "
                                                    "or about a week of plain-loop time; see hpconj validate)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar or summary."),
    debug: bool = DebugOpt,
) -> None:
    """Train every trial of a sweep and record it in results/<name>/."""
    from hpconj import sweep as sweeping
    from hpconj.cost import MAX_TRIALS
    from hpconj.executor import EXECUTORS, ExecutorError, make_executor
    from hpconj.progress import SweepProgress, print_summary

    config = load_config(config_path)
    if device is not None:
        config = _with_device(config, device)
    if engine not in ENGINES:
        raise BadInput(f"--engine: must be one of {' | '.join(ENGINES)}, got {engine!r}")
    kind = executor_kind if executor_kind is not None else config.executor
    if kind not in EXECUTORS:
        raise BadInput(f"--executor: must be one of {' | '.join(EXECUTORS)}, got {kind!r}")
    if address is not None and kind != "ray":
        raise BadInput("--address is the address of a Ray cluster: it needs --executor ray (or executor: ray)")
    config = config.model_copy(update={"executor": kind})  # config.yaml records where the trials ran
    folder = out_dir if out_dir is not None else Path("results") / config.name
    torch_device = sweeping.resolve_device(config.device)
    task = sweeping.load_task(config)
    trial_count, trial_steps = sweeping.sweep_size(config, task)
    try:
        executor = make_executor(
            kind, engine, task=sweeping.widest_task(config, task), device=torch_device,
            batch_sizes=config.sweep.batch_size, chunk_size=chunk_size,
            workers=workers, threads=threads, units=trial_count, trial_steps=trial_steps, address=address,
        )
        with executor:
            if yes or trial_count <= MAX_TRIALS:  # (one above the limit is refused: no workers for it)
                executor.start(config.first_task, torch_device)  # they get ready while the plan is made
            plan = sweeping.plan_sweep(config, task, yes=yes)  # a sweep above the limit stops here, unexpanded
            with SweepProgress(err, enabled=not quiet) as progress:
                outcome = sweeping.run_sweep(
                    plan, task, folder, executor, torch_device, fresh=fresh, max_trials=max_trials,
                    on_start=progress.start, on_result=progress.advance,
                )
    except ExecutorError as exc:  # Ray missing or unreachable, a task that raised or was lost
        raise BadInput(str(exc)) from exc
    if not quiet:
        print_summary(out, folder, config, outcome)
    for line in outcome.stopped:
        err.print(f"[yellow]search limit:[/yellow] {escape(line)}", highlight=False, soft_wrap=True)
    if outcome.interrupted:
        err.print(f"interrupted: {outcome.ran} trials recorded this run; run the same command to resume")
        raise typer.Exit(130)
    if outcome.failures:
        err.print(
            f"[red]error:[/red] {len(outcome.failures)} trial(s) failed in user code, first: {escape(outcome.failures[0])}"
            " (recorded as failed; they run again on resume)", highlight=False, soft_wrap=True,
        )
        raise typer.Exit(2)


def _lr_text(config: Any) -> str:
    """'23 values, 2^-10.00 .. 2^1.00', or the search (hpconj.search.describe)."""
    if config.lr_search is not None:
        from hpconj.search import describe

        return describe(config.lr_search)
    lrs = config.lrs
    return f"{len(lrs)} values, 2^{math.log2(lrs[0]):.2f} .. 2^{math.log2(lrs[-1]):.2f}"


def _with_device(config: Any, device: str) -> Any:
    from hpconj.config import Config, ConfigError

    try:
        return Config.model_validate({**config.model_dump(), "device": device})
    except Exception:
        raise ConfigError([f"--device: must be one of auto | cpu | cuda | cuda:N, got {device!r}"]) from None


@app.command()
@reports_errors
def validate(
    config_path: Path = ConfigArg,
    time_it: bool = typer.Option(False, "--time", help="Also time a few steps of the model for an estimate of the "
                                                       "sweep's wall time (imports torch; a few seconds)."),
    debug: bool = DebugOpt,
) -> None:
    """Check a config and show the trials and cohorts it expands to, and what they will cost, without training."""
    config = load_config(config_path)
    quick = None if time_it else _sized_without_torch(config)
    if quick is not None:
        description, cost, cohorts = quick
    else:  # a user's model or data, or --time: build the task (torch) and time the model
        from hpconj import sweep as sweeping
        from hpconj.sweep import SweepTooLarge

        task = sweeping.load_task(config)
        description = task.description
        try:
            plan = sweeping.plan_sweep(config, task)
            cost, cohorts = plan.cost, len(plan.cohorts)
        except SweepTooLarge as exc:  # too large to expand here: what follows is arithmetic on the config
            cost, cohorts = exc.cost, _cohort_count(config)
    out.print(f"[green]ok[/green] {config_path}: {config.name}", highlight=False)
    swept = config.sweep.task_axes()
    out.print(f"  task        {description}{' (the first architecture)' if swept else ''}", highlight=False)
    for axis, values in swept.items():
        out.print(f"  {axis:<11} {_listed(values)}", highlight=False)
    settings = config.optimizer_settings
    detail = f" ({', '.join(f'{k}={v:g}' for k, v in settings.model_dump().items())})" if settings else ""
    out.print(f"  optimizer   {config.optimizer}{detail}; parameterizations: {', '.join(config.parameterizations)}"
              f" (B_ref = {config.reference_batch_size})", highlight=False)
    out.print(f"  lr          {_lr_text(config)}", highlight=False)
    steps = [cost.batch_steps[b] for b in config.sweep.batch_size]
    out.print(f"  batch sizes {_listed(config.sweep.batch_size)} → steps {_listed(steps)}", highlight=False)
    out.print(f"  momentum    {_listed(config.sweep.momentum)}; seeds {_listed(config.seeds)}", highlight=False)
    about = "about " if config.lr_search is not None and config.lr_search.search == "bracket" else ""
    out.print(f"  {about}{cost.trials:,} trials in {cohorts} cohorts, {about}{cost.steps:,} optimizer steps",
              highlight=False)
    out.print(f"  cost        {cost.summary()}", highlight=False)
    if cost.exceeds_limit:
        out.print(f"  [yellow]limit[/yellow]       above {cost.limit_text()}: hpconj sweep will need --yes to run it",
                  highlight=False)


def _sized_without_torch(config: Any) -> tuple[str, Any, int] | None:
    """(the task in words, the cost without a time, the cohorts) for a built-in model on a built-in
    data set, from the data's known size (hpconj.catalog); None when only building the task tells."""
    from hpconj.catalog import described, has_classes, train_examples
    from hpconj.config import BUILTIN_MODELS
    from hpconj.cost import batch_steps, estimate_cost

    task = config.first_task
    if task.model not in BUILTIN_MODELS:
        return None
    examples = None if task.model == "quadratic" else train_examples(task)
    if task.model != "quadratic" and examples is None:
        return None
    steps = batch_steps(config, examples, task.model != "quadratic" and has_classes(task.data))
    return described(task), estimate_cost(config, None, steps), _cohort_count(config)


def _cohort_count(config: Any) -> int:
    """Cohorts the sweep trains: one per architecture (μP's model is one of its own) and batch size."""
    from hpconj.trials import task_for

    tasks = {task_for(config, task, p).model_dump_json() for _, task in config.task_variants()
             for p in config.parameterizations}
    return len(tasks) * len(config.sweep.batch_size)


def _listed(values: list[Any], shown: int = 12) -> str:
    """A list as Python prints it, or its ends and its length when it is long."""
    if len(values) <= shown:
        return str(list(values))
    head, tail = ", ".join(map(str, values[: shown - 2])), ", ".join(map(str, values[-2:]))
    return f"[{head}, …, {tail}] ({len(values):,} values)"


@app.command()
@reports_errors
def init(
    path: Path = typer.Argument(Path("hpconj.yaml"), help="Where to write the example ('-' for stdout)."),
    force: bool = typer.Option(False, "--force", help="Overwrite an existing file."),
    debug: bool = DebugOpt,
) -> None:
    """Write a commented example config."""
    from hpconj.examples import EXAMPLE_CONFIG

    if str(path) == "-":
        sys.stdout.write(EXAMPLE_CONFIG)
        return
    if path.exists() and not force:
        raise BadInput(f"{path} exists; use --force to overwrite it")
    try:
        path.write_text(EXAMPLE_CONFIG)
    except OSError as exc:
        raise BadInput(f"{path}: cannot write ({exc.strerror or exc})") from None
    out.print(f"wrote {path}; next: hpconj validate {path} && hpconj sweep {path}", highlight=False)


@app.command()
@reports_errors
def tasks(debug: bool = DebugOpt) -> None:
    """List the built-in models, data sets, optimizers and parameterizations."""
    from hpconj.optim import OPTIMIZERS
    from hpconj.parameterizations import PARAMETERIZATIONS
    from hpconj.catalog import DATASETS, MODELS

    table = Table(title="hpconj building blocks", show_lines=False)
    table.add_column("kind")
    table.add_column("name")
    table.add_column("what it is")
    for name, text in MODELS.items():
        table.add_row("model", name, text)
    for name, text in DATASETS.items():
        table.add_row("data", name, text)
    for name, entry in OPTIMIZERS.items():
        table.add_row("optimizer", name, entry.description)
    for name, fn in PARAMETERIZATIONS.items():
        table.add_row("parameterization", name, (fn.__doc__ or "").strip().splitlines()[0])
    out.print(table)


FoldersArg = typer.Argument(..., help="Results folders (a parent folder means every sweep inside it).",
                            show_default=False)


AcceptOpt = typer.Option(False, "--accept-unverified",
                         help="Analyse records that do not match manifest.json (the problems go atop summary.md).")


@app.command()
@reports_errors
def plot(
    folders: list[Path] = FoldersArg,
    formats: str = typer.Option("png,svg", "--formats", help="The figures' formats: png, svg or png,svg."),
    accept_unverified: bool = AcceptOpt,
    debug: bool = DebugOpt,
) -> None:
    """Compute optima, shifts and regret; write optima.csv, shifts.csv, summary.md and plots/."""
    from hpconj.report import plot_folder, result_folders

    chosen = tuple(dict.fromkeys(f.strip().lower() for f in formats.split(",") if f.strip()))
    if not chosen or any(f not in ("png", "svg") for f in chosen):
        err.print(f"[red]error:[/red] --formats: png, svg or png,svg; got {escape(formats)!r}", highlight=False)
        raise typer.Exit(2)
    for folder in result_folders(folders):
        frames, written = plot_folder(folder, accept_unverified, chosen)
        print_report(frames)
        out.print(f"wrote {len(written)} files in {folder}/ (optima.csv, shifts.csv, summary.md, plots/)",
                  highlight=False)


@app.command()
@reports_errors
def compact(folders: list[Path] = FoldersArg, debug: bool = DebugOpt) -> None:
    """Drop curves.csv (the per-trial training curves) from results folders to commit them; check then compares final metrics."""
    from hpconj.folder import compact as compact_folder
    from hpconj.report import result_folders

    for folder in result_folders(folders):
        freed = compact_folder(folder)
        out.print(f"{folder}: dropped curves.csv ({freed / 1e6:.1f} MB); manifest.json records it as dropped",
                  highlight=False)


@app.command()
@reports_errors
def table(folders: list[Path] = FoldersArg, accept_unverified: bool = AcceptOpt, debug: bool = DebugOpt) -> None:
    """Print the optima and shifts tables of results folders, without drawing or writing."""
    from hpconj.folder import refuse_if_busy
    from hpconj.report import analyse, result_folders, verified_results

    for folder in result_folders(folders):
        refuse_if_busy(folder)
        print_report(analyse(verified_results(folder, accept_unverified)))


def _short(text: str) -> str:
    from hpconj.axes import AXES

    for name, axis in AXES.items():
        text = str(text).replace(name, axis.symbol)
    return text


def print_report(frames: Any) -> None:
    """The optima and shifts as rich tables, then one sentence per parameterization."""
    import numpy as np

    from hpconj.analysis import shift_sentences
    from hpconj.axes import AXES, axes_of
    from hpconj.report import interval_text

    meta = frames.meta
    optimum = Table(title=f"{meta['name']}: optimal lr per slice ({meta['task']}, {meta['optimizer']}, "
                          f"{meta['budget']}, {meta['metric']})")
    axes = axes_of(frames.optima) if not frames.optima.empty else ["batch_size", "momentum"]
    for column in ("parameterization", *(AXES[a].symbol for a in axes), "log2 lr*", "95% interval", "metric", "seeds"):
        optimum.add_column(column, justify="left" if column == "parameterization" else "right")
    for _, r in frames.optima.iterrows():
        at = [AXES[a].text(r[a]) for a in axes]
        if not np.isfinite(r["log2_lr_opt"]):
            optimum.add_row(r["parameterization"], *at, "all diverged", "", "", str(r["n_seeds"]))
            continue
        edge = " (edge)" if r["at_edge"] else ""
        optimum.add_row(r["parameterization"], *at,
                        f"{r['log2_lr_opt']:.2f}{edge}", interval_text(r["lr_lo"], r["lr_hi"]),
                        f"{r['metric_opt']:.4g}", str(r["n_seeds"]))
    out.print(optimum)
    shift = Table(title="shift of log2 lr* (slope vs log2 B, log2(1 − β), log2 of the axis; regret of reusing the "
                        "reference lr)" if len(axes) > 2 else
                  "shift of log2 lr* (slope vs log2 B or log2(1 − β); regret of reusing the reference lr)")
    for column in ("parameterization", "axis", "at", "slope", "95% interval", "octaves", "regret max", "edge"):
        shift.add_column(column, justify="left" if column in ("parameterization", "axis", "at") else "right")
    for _, r in frames.shifts.iterrows():
        regret = "diverges" if np.isinf(r["regret_max"]) else (
            "–" if not np.isfinite(r["regret_max"]) else f"{100 * r['regret_max']:.0f}%")
        shift.add_row(r["parameterization"], _short(r["axis"]), _short(r["fixed"]), f"{r['slope']:.2f}",
                      f"[{r['slope_lo']:.2f}, {r['slope_hi']:.2f}]", f"{r['shift_octaves']:+.2f}", regret,
                      str(r["n_edge"]))
    out.print(shift)
    for sentence in shift_sentences(frames.shifts, frames.optima):
        out.print(sentence.replace("**", ""), highlight=False)
    if not frames.claims.empty:
        _print_claims(frames.claims)


def _print_claims(claims: Any) -> None:
    """The verdict of every `expect:` claim (hpconj.claims), refuted ones as plainly as the others."""
    from hpconj.claims import band_text, estimate_text, verdict_text

    table = Table(title="claims (band from the source; verdict from the 95% interval)")
    for column in ("claim", "parameterization, where", "band", "estimate [95% interval]", "verdict"):
        table.add_column(column)
    colours = {"holds": "green", "fails": "red", "inconclusive": "yellow", "missing": "yellow"}
    for _, r in claims.iterrows():
        colour = colours[r["verdict"]]
        table.add_row(f"{r['id']}: {r['claim']}", f"{r['parameterization']}, {r['where']}", band_text(r),
                      estimate_text(r), f"[{colour}]{escape(verdict_text(r))}[/{colour}]")
    out.print(table)


@app.command()
@reports_errors
def check(
    folder: Path = typer.Argument(..., help="A results folder made by hpconj sweep.", show_default=False),
    integrity: bool = typer.Option(False, "--integrity", help="Only verify file hashes (fast, no training)."),
    trials: str = typer.Option("all", "--trials", help="Re-run all | N | F% of the trials (sample by trial id)."),
    rtol: Optional[float] = typer.Option(None, "--rtol", min=0, help="Relative tolerance [default: see README]."),
    atol: Optional[float] = typer.Option(None, "--atol", min=0, help="Absolute tolerance [default: see README]."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, help="Worker processes for the re-run."),
    chunk_size: int = typer.Option(DEFAULT_CHUNK, "--chunk-size", min=1, help="Most trials trained as one stack."),
    debug: bool = DebugOpt,
) -> None:
    """Verify a results folder: file integrity, then re-run trials and re-derive optima and shifts."""
    if integrity:  # hashes only: torch-free, a fraction of a second
        from hpconj.integrity import check_integrity

        report = check_integrity(folder, out)
        raise typer.Exit(0 if not report.differences else 1)
    from hpconj.checking import run_check

    report = run_check(folder, integrity_only=False, sample=trials, rtol=rtol, atol=atol, workers=workers,
                       chunk_size=chunk_size, console=out)
    raise typer.Exit(0 if not report.differences else 1)


def main() -> None:
    """Entry point: click's usage errors (a missing argument, --workers 0) also become one line."""
    from typer.exceptions import TyperException

    os.environ.setdefault("PYTHONWARNINGS", "ignore")
    try:
        code = app(standalone_mode=False)
    except TyperException as exc:  # click's usage errors, as vendored by typer
        ctx = getattr(exc, "ctx", None)
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            out.print(ctx.get_help(), highlight=False)
            sys.exit(0)
        where = f" (see {ctx.command_path} --help)" if ctx is not None else ""
        err.print(f"[red]error:[/red] {escape(exc.format_message())}{escape(where)}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (typer.Abort, KeyboardInterrupt):
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    sys.exit(code if isinstance(code, int) else 0)
