"""What loading a backbone prints: no progress bars inside ours, and transformers' load report only when it matters.

Every self-supervised checkpoint on the hub is loaded into a base model, so transformers' "LOAD REPORT" lists
the same harmless rows on every load: ``masked_spec_embed`` MISSING (the learned mask vector, used only when a
fine-tuning run masks features, and then trained) and the pretraining heads' weights UNEXPECTED (quantizer,
``project_q``, ``project_hid``, ...: a base model has no use for them).  :func:`quiet_transformers` keeps such a
report to one debug line; a report with anything else in it (a missing encoder weight, a size mismatch: features
from random weights) still reaches the user as a warning, whole.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

# Weights a base model may miss without harm: the learned mask vector (random, then trained when masking is on).
HARMLESS_MISSING = ("masked_spec_embed",)
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_ROW = re.compile(r"^\s*(\S+)\s*\|\s*([A-Z_]+)\s*\|")


def report_rows(message: str) -> list[tuple[str, str]]:
    """(key, status) of each row of a transformers load report (colour codes stripped)."""
    rows = []
    for line in _ANSI.sub("", message).splitlines():
        m = _ROW.match(line)
        if m and m.group(1) != "Key":
            rows.append((m.group(1), m.group(2)))
    return rows


def is_harmless(message: str) -> bool:
    """A load report whose rows are only unused checkpoint weights and the harmless missing ones."""
    rows = report_rows(message)
    return bool(rows) and all(status == "UNEXPECTED" or (status == "MISSING" and key in HARMLESS_MISSING)
                              for key, status in rows)


class _LoadReportFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "LOAD REPORT" not in message or not is_harmless(message):
            return True
        rows = report_rows(message)
        log.debug("checkpoint load: %d unused checkpoint weight(s), missing %s (harmless)",
                  sum(s == "UNEXPECTED" for _, s in rows), [k for k, s in rows if s == "MISSING"] or "none")
        return False


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """No weight-loading progress bars inside our own progress bar; harmless load reports kept to debug."""
    import transformers.utils.logging as tlog

    enabled = tlog.is_progress_bar_enabled()
    tlog.disable_progress_bar()
    # transformers' own logger hands every module's records to its handlers; where a user let them propagate,
    # the root logger's handlers print them
    handlers = list(tlog.get_logger().handlers) + list(logging.getLogger().handlers)
    report_filter = _LoadReportFilter()
    for h in handlers:
        h.addFilter(report_filter)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(report_filter)
        if enabled:
            tlog.enable_progress_bar()
