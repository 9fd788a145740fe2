"""``python -m wav2emo.report DIR [DIR ...] [--out OUT] [--folds 0 1 2 3 4]``: the reports of finished runs again.

For a Hydra sweep directory (or a folder holding several sweeps, e.g. configurations run as parallel
multiruns): one report per configuration, grouped by every override except ``fold`` and ``seed`` (seeds are
repeats of a configuration), and the comparison across configurations (``comparison.{json,md,png}``: the table
over folds, intervals over test speakers and paired tests). For a folder of fold results without Hydra
metadata: one report. Several DIRs: each DIR's reports, and one comparison of all their configurations written
to ``--out``. Nothing is trained; fold results are only read.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from wav2emo.cli import user_errors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m wav2emo.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("dirs", type=Path, nargs="+", metavar="DIR",
                    help="a sweep directory, a folder of sweeps, or a folder of fold results (several: compared)")
    ap.add_argument("--out", type=Path, default=None,
                    help="where the comparison of several DIRs goes (required with more than one DIR)")
    ap.add_argument("--folds", type=int, nargs="*", default=None,
                    help="folds every configuration should have (missing ones are flagged, never averaged over)")
    ap.add_argument("--resamples", type=int, default=None, help="speaker-bootstrap resamples (default 2000)")
    ap.add_argument("--seed", type=int, default=None, help="seed of the bootstrap and permutations (default 0)")
    ap.add_argument("--confidence", type=float, default=None, help="interval level (default 0.95)")
    ap.add_argument("--method", default=None, help="percentile (default), BCa or basic")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from wav2emo.reports.fold_results import FOLD_RESULT

    for d in args.dirs:
        if not d.is_dir():
            print(f"wav2emo.report: {d} is not a directory", file=sys.stderr)
            return 2
        if next(d.rglob(FOLD_RESULT), None) is None:
            print(f"wav2emo.report: no {FOLD_RESULT} under {d}: nothing finished to report "
                  "(point at a run, a sweep or a folder of sweeps)", file=sys.stderr)
            return 2
    if len(args.dirs) > 1 and args.out is None:
        print(f"wav2emo.report: {len(args.dirs)} directories given but no --out: name the folder the comparison "
              "of their configurations goes to", file=sys.stderr)
        return 2
    from wav2emo.reports.directories import compare_directories
    from wav2emo.reports.intervals import BootstrapSettings
    from wav2emo.reports.sweep import aggregate_sweep

    given = {"bootstrap_resamples": args.resamples, "bootstrap_seed": args.seed, "confidence": args.confidence,
             "bootstrap_method": args.method}
    settings = BootstrapSettings.from_config(given) if any(v is not None for v in given.values()) else None
    if len(args.dirs) > 1:
        out = compare_directories(args.dirs, args.out, expected_folds=args.folds, bootstrap=settings)
        for row in out["configurations"]:
            print(f"{row['name']}: {row['report']}")
        print(f"comparison: {args.out / 'comparison.md'}")
        return 0
    root = args.dirs[0]
    out = aggregate_sweep(root, expected_folds=args.folds, bootstrap=settings)
    if out.get("configurations"):
        for row in out["configurations"]:
            print(f"{row.get('name')}: {row.get('report')}")
        if len(out["configurations"]) > 1:
            print(f"comparison: {root / 'comparison.md'}")
        else:
            print(f"{root} holds one configuration: no comparison written (give several DIRs, or a sweep over "
                  "several configurations, to compare)")
    else:
        print(f"report: {root / 'cv_report.md'}")
        print(f"{root} holds one configuration: no comparison written (give several DIRs, or a sweep over "
              "several configurations, to compare)")
    return 0


def cli() -> None:
    """Console-script entry (``wav2emo-report``): user errors as one line and exit status 2."""
    with user_errors("wav2emo.report"):
        sys.exit(main())


if __name__ == "__main__":
    cli()
