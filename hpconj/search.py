"""Learning-rate search per slice: which trials a sweep plans, given the results it has.

A grid plans every trial at once. A search plans round by round, and each slice (hpconj.trials.
Slice: the trials that differ only in lr and seed) searches on its own seed-mean metric, every
seed at the same learning rates (common random numbers). Round k of a slice depends only on the
results of its rounds < k, so a search is a pure function of the recorded results: a killed sweep
re-plans the same trials, and `hpconj check` re-derives the path and flags any stored trial it
does not explain. A failed trial (an exception in user code) holds its slice until it is recorded
ok or diverged, as a grid's failed trial runs again on resume.

Bracket search (sweep.lr: {search: bracket, start, step, precision}), in x = log2 lr, with m(x)
the seed-mean metric (+inf where a seed diverged):
  round 0: `points` values x0 + step·(j − (points − 1)/2), x0 = log2 start;
  then, over the x searched so far, sorted, with i the argmin of the finite m:
    no finite m          → x_first − step  (everything diverged: go lower);
    i is the first x     → x_first − step  (extend until the best is bracketed);
    i is the last x      → x_last + step;
    bracketed, gaps g_l = x_i − x_{i−1}, g_r = x_{i+1} − x_i:
      max(g_l, g_r) ≤ precision → done;
      g_l ≠ g_r → the midpoint of the wider gap;
      g_l = g_r → the midpoint towards the better neighbour (where the parabola through the three
                  points has its vertex), both midpoints when the neighbours tie;
    and towards the stability edge: every x_j above x_i (but the last) with m_j ≤ m_i + tolerance·|m_i|
    gets the midpoints of its gaps wider than precision as well. Just below the largest stable lr
    the curve can dip sharply (the catapult phase of Lewkowycz et al. 2020; "aim for the maximum
    stable learning rate", Saxe): on the quickstart's B = 8 and B = 128 slices at β = 0 the best lr
    is such a dip a whole octave above the first minimum, which a search around that minimum alone
    never sees (benchmarks/search.py). `tolerance: 0` searches around the best point only.
  A slice stops early at `max_rounds` rounds or when a round would pass `max_lrs` learning rates;
  the sweep says which slices stopped so (`SearchPlan.stopped`), and the analysis then reports
  what the points give (an optimum at an end of them is `at_edge`, a bound).
  With start = 2^k, a step of 2^j octaves and a precision of 2^-p, every x lies on the lattice of
  spacing 2^-p: the searched trials are trials of that grid (the same ids, the same results).

Random search (sweep.lr: {search: random, trials: N, log2_range: [a, b], seed}): per slice, N
values x ~ U(a, b) from numpy's PCG64 seeded by sha256 of (seed, the slice's identity); the first
N draws of a larger N are the same, so raising `trials` extends a folder. Its optimum is estimated
like a grid's (hpconj.analysis): the best seed mean among the drawn points, refined by the parabola
through it and its two neighbours in x.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from hpconj.config import Config, LrBracket, LrRandom, stable_hash
from hpconj.trials import Slice, Trial, expand_trials, slices

# The relative slack of the precision test: gaps are sums of binary fractions of `step`.
_SLACK = 1e-9


def log2_lr(x: float) -> float:
    """The learning rate 2**x, with x rounded as hpconj.config.lr_grid rounds a grid's exponents,
    so that a searched lr on a grid's lattice is that grid's lr to the bit (and so its trial)."""
    return 2.0 ** round(x, 12)


@dataclass(frozen=True)
class SearchPlan:
    """The trials a sweep plans given its results: `trials` every planned trial (those with results
    and those still to run), `pending` those without a result yet, `stopped` one line per slice whose
    search a limit stopped, `rounds` the most rounds any slice has planned."""

    trials: list[Trial]
    pending: list[Trial]
    stopped: list[str] = field(default_factory=list)
    rounds: int = 1


def planned_trials(config: Config, results: Mapping[str, float]) -> SearchPlan:
    """What `config` plans given `results` (trial id → final metric, +inf when diverged; failed and
    unrun trials absent)."""
    search = config.lr_search
    if search is None:
        trials = _grid(config)
        return SearchPlan(trials, [t for t in trials if t.trial_id not in results])
    if isinstance(search, LrRandom):
        trials = [s.trial(lr, seed) for s in slices(config) for seed in config.seeds for lr in random_lrs(s, search)]
        return SearchPlan(trials, [t for t in trials if t.trial_id not in results])
    paths = [bracket_path(s, search, config.seeds, results) for s in slices(config)]
    return SearchPlan([t for p in paths for t in p.trials], [t for p in paths for t in p.pending],
                      [f"{p.slice.label}: {p.stopped}" for p in paths if p.stopped], max(p.rounds for p in paths))


_GRIDS: dict[str, list[Trial]] = {}


def _grid(config: Config) -> list[Trial]:
    """expand_trials(config), kept for the last config asked: a sweep re-plans after every round,
    and hashing every trial's id again costs ~0.2 ms a trial."""
    key = config.config_hash()
    if key not in _GRIDS:
        _GRIDS.clear()
        _GRIDS[key] = expand_trials(config)
    return _GRIDS[key]


# ----------------------------------------------------------------------------- random search
def random_lrs(slice_: Slice, search: LrRandom) -> list[float]:
    """The slice's `trials` learning rates, log-uniform on 2**log2_range (see the module docstring)."""
    import numpy as np

    digest = stable_hash({"seed": search.seed, "slice": slice_.identity()})
    rng = np.random.default_rng(int(digest[:16], 16))
    lo, hi = search.log2_range
    return [log2_lr(lo + (hi - lo) * float(u)) for u in rng.random(search.trials)]


# ----------------------------------------------------------------------------- bracket search
@dataclass(frozen=True)
class SlicePath:
    slice: Slice
    trials: list[Trial]
    pending: list[Trial]
    rounds: int
    stopped: str | None = None


def initial_points(search: LrBracket) -> list[float]:
    """Round 0: `points` values of x, `step` octaves apart, centred on log2 start."""
    x0 = math.log2(search.start)
    return [x0 + search.step * (j - (search.points - 1) / 2) for j in range(search.points)]


def seed_mean(values: list[float]) -> float:
    """The mean over seeds, +inf when any seed diverged (or has no finite metric)."""
    if any(not math.isfinite(v) for v in values):
        return math.inf
    return sum(values) / len(values)


def next_points(searched: Mapping[float, float], search: LrBracket) -> list[float]:
    """The next round's x of one slice, given the seed mean at every x searched so far; [] when done
    (see the module docstring for the rule)."""
    xs = sorted(searched)
    ms = [searched[x] for x in xs]
    if not any(math.isfinite(m) for m in ms):
        return [xs[0] - search.step]
    i = min(range(len(xs)), key=lambda j: (ms[j], j))
    if i == 0:
        return [xs[0] - search.step]
    if i == len(xs) - 1:
        return [xs[-1] + search.step]
    wanted = set(_around_best(xs, ms, i, search.precision))
    for j in range(i + 1, len(xs) - 1):  # towards the stability edge: the near-best points' gaps too
        if ms[j] <= ms[i] + search.tolerance * abs(ms[i]):
            wanted |= {(a + b) / 2 for a, b in ((xs[j - 1], xs[j]), (xs[j], xs[j + 1])) if _wide(b - a, search)}
    return sorted(wanted)


def _wide(gap: float, search: LrBracket) -> bool:
    return gap > search.precision * (1 + _SLACK)


def _around_best(xs: list[float], ms: list[float], i: int, precision: float) -> list[float]:
    """Midpoints next to the bracketed best x_i: of the wider gap; of the gap towards the better
    neighbour when they are equal (both when the neighbours tie); none once both are ≤ precision."""
    left, right = xs[i] - xs[i - 1], xs[i + 1] - xs[i]
    if max(left, right) <= precision * (1 + _SLACK):
        return []
    if abs(left - right) > _SLACK * max(left, right):
        return [xs[i] - left / 2] if left > right else [xs[i] + right / 2]
    if ms[i - 1] == ms[i + 1]:
        return [xs[i] - left / 2, xs[i] + right / 2]
    return [xs[i] - left / 2] if ms[i - 1] < ms[i + 1] else [xs[i] + right / 2]


def bracket_path(slice_: Slice, search: LrBracket, seeds: list[int], results: Mapping[str, float]) -> SlicePath:
    """Replay one slice's search over the recorded results: its trials so far, the round still
    missing results (pending), and why a limit stopped it, if one did."""
    searched: dict[float, float] = {}
    trials: list[Trial] = []
    points = initial_points(search)
    rounds = 0
    while True:
        rounds += 1
        batch = {x: [slice_.trial(log2_lr(x), seed) for seed in seeds] for x in points}
        trials += [t for ts in batch.values() for t in ts]
        pending = [t for ts in batch.values() for t in ts if t.trial_id not in results]
        if pending:
            return SlicePath(slice_, trials, pending, rounds)
        for x, ts in batch.items():
            searched[x] = seed_mean([results[t.trial_id] for t in ts])
        points = next_points(searched, search)
        if not points:
            return SlicePath(slice_, trials, [], rounds)
        if rounds >= search.max_rounds:
            return SlicePath(slice_, trials, [], rounds, _stopped(searched, search, f"max_rounds = {search.max_rounds}"))
        if len(searched) + len(points) > search.max_lrs:
            return SlicePath(slice_, trials, [], rounds, _stopped(searched, search, f"max_lrs = {search.max_lrs}"))


def _stopped(searched: Mapping[float, float], search: LrBracket, limit: str) -> str:
    """Why a limit left a slice's optimum unfinished, in words."""
    xs = sorted(searched)
    finite = [x for x in xs if math.isfinite(searched[x])]
    if not finite:
        return f"stopped at {limit}: every lr down to 2^{xs[0]:g} diverged"
    best = min(finite, key=lambda x: searched[x])
    if best in (xs[0], xs[-1]):
        return f"stopped at {limit} before the optimum was bracketed (best so far 2^{best:g}, at an end)"
    return f"stopped at {limit} before the gaps around the optimum (2^{best:g}) reached {search.precision:g} octave"


def expected_lrs(search: LrBracket | LrRandom) -> int:
    """About how many learning rates a slice searches (for cost estimates): the first points, one
    extension, then about 1.5 per halving of the step down to the precision; at most max_lrs."""
    if isinstance(search, LrRandom):
        return search.trials
    halvings = max(0, math.ceil(math.log2(search.step / search.precision) - _SLACK))
    return min(search.max_lrs, search.points + 1 + math.ceil(1.5 * halvings))


def describe(search: LrBracket | LrRandom) -> str:
    """The lr line of `hpconj validate` and summary.md for a search."""
    if isinstance(search, LrRandom):
        lo, hi = search.log2_range
        return (f"random search per slice: {search.trials} values log-uniform on 2^{lo:g} .. 2^{hi:g} "
                f"(seed {search.seed}), the same for every seed")
    return (f"bracket search per slice from 2^{math.log2(search.start):.4g}: {search.points} values {search.step:g} "
            f"octaves apart, then to {search.precision:g} octave (about {expected_lrs(search)} values; at most "
            f"{search.max_lrs} values or {search.max_rounds} rounds)")
