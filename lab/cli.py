"""The command line. Bad input ends in one line `error: …` and exit status 2, never a traceback."""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

from lab.errors import LabError

USAGE = """python -m lab <command> …

  run [-m] [+experiment=NAME] [group=choice …] [key=value …]
        run an experiment (Hydra overrides; -m for sweeps such as attention=mha,gqa,mla)
  list  every axis, its variants, and which can run on this machine
  report PATH… [-o FILE]
        render one HTML report from run directories or results.parquet files
  check --baseline results/baselines/<device>/<experiment> [--run RUN_DIR] [overrides …]
        compare a run (or a fresh run of the baseline's experiment) with the committed baseline;
        exits 1 on a regression (a fresh run's latency regressions must show again in a second run)
  baseline RUN_DIR --to results/baselines/<device>/<experiment> [--overwrite]
        make a finished run the committed baseline (its tables, provenance and report)
"""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    command, rest = argv[0], argv[1:]
    try:
        if command == "run":
            return cmd_run(rest)
        if command == "list":
            return cmd_list(rest)
        if command == "report":
            return cmd_report(rest)
        if command == "check":
            return cmd_check(rest)
        if command == "baseline":
            return cmd_baseline(rest)
        raise LabError(f"unknown command {command!r}; commands: run, list, report, check, baseline (python -m lab --help)")
    except LabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished points are kept; rerun with the same run_id=… to resume", file=sys.stderr)
        return 130


def cmd_run(args: list[str]) -> int:
    from lab import runner

    multirun = False
    overrides = []
    for a in args:
        if a in ("-m", "--multirun"):
            multirun = True
        elif a.startswith("-"):
            raise LabError(f"unknown option {a!r} for run; options: -m/--multirun, then Hydra overrides key=value")
        else:
            overrides.append(a)
    for o in overrides:
        if "=" not in o:
            raise LabError(f"override {o!r} has no '='; write group=choice or key=value (e.g. +experiment=quickstart)")
    runner.run(overrides, multirun)
    return 0


def cmd_list(args: list[str]) -> int:
    from lab import registry
    from lab.config import experiment_names

    for group in registry.GROUPS:
        print(f"{group}:")
        for name, entry in registry.entries(group).items():
            ok, why = registry.availability(entry)
            mark = "ok " if ok else "n/a"
            ref = " (reference)" if entry.reference else ""
            tail = f"  -- {why}" if not ok else ""
            print(f"  [{mark}] {name}{ref}: {entry.doc}{tail}")
    print("experiment (+experiment=NAME):")
    for name in experiment_names():
        print(f"  {name}")
    return 0


def cmd_report(args: list[str]) -> int:
    from lab.report import render
    from lab.store import load_results

    p = argparse.ArgumentParser(prog="python -m lab report")
    p.add_argument("paths", nargs="+")
    p.add_argument("-o", "--output", default=None)
    p.add_argument("--title", default=None)
    ns = p.parse_args(args)
    missing = [x for x in ns.paths if not Path(x).exists()]
    if missing:
        raise LabError(f"no such run directory or results file: {', '.join(missing)}")
    results, samples, provs = load_results([Path(x) for x in ns.paths])
    name = "-".join(Path(x).resolve().name for x in ns.paths[:3])
    out = Path(ns.output) if ns.output else Path("reports") / f"report-{name}.html"
    print(render(results, samples, provs, out, title=ns.title or name))
    return 0


def cmd_check(args: list[str]) -> int:
    from lab import runner
    from lab.regress import check_main

    p = argparse.ArgumentParser(prog="python -m lab check")
    p.add_argument("--baseline", required=True, help="results/baselines/<device>/<experiment>")
    p.add_argument("--run", default=None, help="a finished run directory to compare (default: run the experiment now)")
    p.add_argument("overrides", nargs="*")
    ns = p.parse_args(args)
    baseline = Path(ns.baseline)
    if not baseline.is_dir():
        raise LabError(f"--baseline {ns.baseline!r}: no such directory; baselines live in results/baselines/<device>/<experiment>")
    run_dir = Path(ns.run) if ns.run else None
    measure_again = None  # a finished run given by --run cannot be measured again
    if run_dir is None:
        overrides = baseline_overrides(baseline) + ns.overrides
        print(f"[lab] running {' '.join(overrides)} to compare with {baseline}", file=sys.stderr)
        run_dir = runner.run(overrides, multirun=True, quiet=False)
        # a fresh run directory each time (-again, -again2, ...): the same run_id would find every
        # point finished and skip it, and a confirmation would compare a run with itself
        kept = [o for o in overrides if not o.lstrip("+").startswith("run_id=")]
        tries = itertools.count(1)

        def again() -> Path:
            n = next(tries)
            return runner.run(kept + [f"run_id={run_dir.name}-again{n if n > 1 else ''}"], multirun=True, quiet=False)
        measure_again = again
    elif not run_dir.exists():
        raise LabError(f"--run {ns.run!r}: no such run directory")
    return check_main(baseline, run_dir, measure_again)


def cmd_baseline(args: list[str]) -> int:
    from lab.regress import save_baseline
    from lab.report import render
    from lab.store import load_results

    p = argparse.ArgumentParser(prog="python -m lab baseline")
    p.add_argument("run")
    p.add_argument("--to", required=True, help="results/baselines/<device>/<experiment>")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--overrides", nargs="*", default=None, help="the overrides that reproduce the run (written to overrides.txt)")
    ns = p.parse_args(args)
    if not Path(ns.run).is_dir():
        raise LabError(f"{ns.run!r}: no such run directory")
    dest = save_baseline(ns.run, ns.to, overwrite=ns.overwrite)
    if ns.overrides:
        (dest / "overrides.txt").write_text("\n".join(ns.overrides) + "\n")
    results, samples, provs = load_results([dest])
    print(render(results, samples, provs, dest / "report.html", title=f"baseline · {dest.parent.name} · {dest.name}"))
    return 0


def baseline_overrides(baseline: Path) -> list[str]:
    """The overrides that reproduce a baseline: `overrides.txt` beside it (one per line), else
    `+experiment=<folder name>`."""
    f = baseline / "overrides.txt"
    if f.is_file():
        return [line.strip() for line in f.read_text().splitlines() if line.strip() and not line.startswith("#")]
    return [f"+experiment={baseline.name}"]


if __name__ == "__main__":
    raise SystemExit(main())
