"""How a metric reads in a Markdown table: one helper every report shares."""

from __future__ import annotations

from typing import Any

import numpy as np


def fmt(value: Any, digits: int = 4) -> str:
    """A metric for a table; a missing one (None, NaN) shows as ``n/a`` instead of breaking the report."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "n/a"
    return f"{value:.{digits}f}"
