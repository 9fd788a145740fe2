"""``python -m wav2emo.report DIR [--folds 0 1 2 3 4]``: the cross-validation reports of finished runs again.

For a Hydra sweep directory (or a folder holding several sweeps, e.g. configurations run as parallel
multiruns): one report per configuration, grouped by every override except ``fold``, and the comparison
table across configurations (``comparison.{json,md,png}``). For a folder of fold results without Hydra
metadata: one report. Nothing is trained; fold results are only read.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from wav2emo.cli import user_errors


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m wav2emo.report", description=__doc__.split("\n\n")[0])
    ap.add_argument("dir", type=Path, help="a sweep directory, a folder of sweeps, or a folder of fold results")
    ap.add_argument("--folds", type=int, nargs="*", default=None,
                    help="folds every configuration should have (missing ones are flagged, never averaged over)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from wav2emo.reports.sweep import aggregate_sweep

    if not args.dir.is_dir():
        print(f"wav2emo.report: {args.dir} is not a directory", file=sys.stderr)
        return 2
    from wav2emo.reports.fold_results import FOLD_RESULT

    if next(args.dir.rglob(FOLD_RESULT), None) is None:
        print(f"wav2emo.report: no {FOLD_RESULT} under {args.dir}: nothing finished to report "
              "(point at a run, a sweep or a folder of sweeps)", file=sys.stderr)
        return 2
    out = aggregate_sweep(args.dir, expected_folds=args.folds)
    if out.get("configurations"):
        for row in out["configurations"]:
            print(f"{row.get('name')}: {row.get('report')}")
        if len(out["configurations"]) > 1:
            print(f"comparison: {args.dir / 'comparison.md'}")
    else:
        print(f"report: {args.dir / 'cv_report.md'}")
    return 0


def cli() -> None:
    """Console-script entry (``wav2emo-report``): user errors as one line and exit status 2."""
    with user_errors("wav2emo.report"):
        sys.exit(main())


if __name__ == "__main__":
    cli()
