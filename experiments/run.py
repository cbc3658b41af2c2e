"""Re-run every experiment (`make experiments`): each config `experiments/<id>/<name>.yaml` is swept
into `experiments/<id>/results/<name>/` (--fresh: the folder is hpconj's own), plotted (PNG only)
and compacted (`hpconj compact` drops curves.csv), to keep the committed results small; then E11's
resampling, and the table of
experiments/README.md is written again from the claims.csv files.

    python experiments/run.py            # all experiments
    python experiments/run.py e01 e07    # only those whose folder name starts so
"""
from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
HPCONJ = [sys.executable, "-m", "hpconj"]


def configs(prefixes: list[str]) -> list[Path]:
    """Every experiment config, in catalogue order, filtered by folder-name prefixes."""
    found = sorted(HERE.glob("e[0-9][0-9]_*/*.yaml"))
    return [c for c in found if not prefixes or any(c.parent.name.startswith(p) for p in prefixes)]


def run(config: Path) -> None:
    out = config.parent / "results" / config.stem
    for command in (["sweep", str(config), "--out", str(out), "--fresh", "--quiet"],
                    ["plot", str(out), "--formats", "png"], ["compact", str(out)]):
        done = subprocess.run([*HPCONJ, *command], capture_output=True, text=True)
        if done.returncode != 0:
            sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}")


def main(prefixes: list[str]) -> None:
    start = time.perf_counter()
    for config in configs(prefixes):
        begun = time.perf_counter()
        run(config)
        print(f"{config.relative_to(HERE)}: {time.perf_counter() - begun:.0f} s", flush=True)
    if not prefixes or any("e11".startswith(p[:3]) for p in prefixes):
        subprocess.run([sys.executable, str(HERE / "e11_random_vs_grid" / "resample.py")], check=True)
    subprocess.run([sys.executable, str(HERE / "catalogue.py"), "--write"], check=True)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    print(f"all: {time.perf_counter() - start:.0f} s wall, {usage.ru_utime + usage.ru_stime:.0f} s CPU")


if __name__ == "__main__":
    main(sys.argv[1:])
