"""Where every benchmark script puts its report: ``<out>/<stem>.json`` beside ``<out>/<stem>.md``.

The stem usually names the machine the figures came from (``train_nvidia_h100_80gb_hbm3``): ``machine_slug``
turns a GPU's or machine's name into that part of the file name, the same way for every script, so the reports
in benchmarks/reports/ keep their names.  The scripts import it as ``benchmarks.report_files`` after putting the
repository root on ``sys.path`` (as they do for wav2emo), so it works from the repository root and when a script
is run by its path.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any


def machine_slug(name: str, limit: int | None = None) -> str:
    """``name`` in lower case with each run of other characters than a-z and 0-9 turned into one ``_``, none at
    either end; at most ``limit`` characters (cut after the ends were trimmed, as the committed reports' names
    were): ``"NVIDIA H100 80GB HBM3"`` -> ``"nvidia_h100_80gb_hbm3"``."""
    slug = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    return slug if limit is None else slug[:limit]


def write_report(out_dir: Path | str, stem: str, result: Any, markdown: str) -> tuple[Path, Path]:
    """Write ``result`` as ``<out_dir>/<stem>.json`` (indent 2) and ``markdown`` as ``<out_dir>/<stem>.md``, each
    ending in exactly one newline; creates ``out_dir``.  Returns the two paths (JSON first)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f"{stem}.json", out_dir / f"{stem}.md"
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    md_path.write_text(markdown.rstrip("\n") + "\n")
    return json_path, md_path
