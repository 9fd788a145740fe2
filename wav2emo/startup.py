"""What a wav2emo process leaves out at start-up: torchmetrics' optional text, image, plot and audio back-ends.

Lightning imports torchmetrics, and torchmetrics imports transformers (for BERTScore and InfoLM), torchvision (for
its image metrics, which also loads ``torch._dynamo``), matplotlib (for ``Metric.plot``) and scipy.signal with
scipy.stats (only to patch ``scipy.signal.hamming`` for a third-party audio metric) whenever they are installed -
several seconds of a training run's start-up (benchmarks/reports/startup_h200.md), for metrics wav2emo never
computes.  :func:`leave_out_unused_backends`, called by the entry points before anything imports Lightning,
makes torchmetrics read those packages as absent in this process.  The packages themselves stay importable:
feature extraction still imports transformers for its backbone when it runs.  ``WAV2EMO_TORCHMETRICS_ALL_BACKENDS=1``
keeps torchmetrics as it is (for its text or image metrics, and for benchmarks/startup_benchmark.py's comparison).
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
from types import ModuleType

FLAGS_MODULE = "torchmetrics.utilities.imports"
# torchmetrics' availability flags (lightning_utilities RequirementCache objects) for back-ends wav2emo never uses
UNUSED_FLAG_PREFIXES = ("_TRANSFORMERS", "_TORCHVISION", "_MATPLOTLIB", "_SCIENCEPLOT", "_SCIPI_AVAILABLE")
PACKAGE = "torchmetrics"
SKIPPED_BY_PACKAGE_INIT = ("scipy",)  # torchmetrics/__init__ asks lightning_utilities' package_available for these
REASON = "left out of wav2emo processes (wav2emo/startup.py): torchmetrics' text, image and plot metrics are unused"


def mark_unused(flags: ModuleType) -> list[str]:
    """Set every unused back-end's flag in torchmetrics' import module to 'not available'; the names set."""
    names = [n for n in vars(flags) if n.startswith(UNUSED_FLAG_PREFIXES)]
    for name in names:
        flag = getattr(flags, name)
        if isinstance(flag, bool):
            setattr(flags, name, False)
        else:  # a RequirementCache: its answer is cached in .available, which it checks before looking
            flag.available = False
            flag.message = REASON
    return names


class _FlagsLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def __getattr__(self, name: str):  # get_data, is_package, resource readers...: the real loader's
        return getattr(self.loader, name)

    def create_module(self, spec):  # noqa: ANN001
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        if module.__name__ == PACKAGE:
            self._exec_package(module)
            return
        self.loader.exec_module(module)
        mark_unused(module)  # before any torchmetrics module reads a flag

    def _exec_package(self, module: ModuleType) -> None:
        """torchmetrics/__init__ with ``package_available`` answering False for the skipped packages; restored
        right after (torchmetrics keeps the wrapper under its own name; nothing else of it asks)."""
        from lightning_utilities.core import imports

        original = imports.package_available

        def package_available(name: str) -> bool:
            return False if name in SKIPPED_BY_PACKAGE_INIT else original(name)

        imports.package_available = package_available
        try:
            self.loader.exec_module(module)
        finally:
            imports.package_available = original


class _FlagsFinder(importlib.abc.MetaPathFinder):
    """Finds torchmetrics' flag module as the other finders do, and marks the flags once it has run."""

    def find_spec(self, fullname, path, target=None):  # noqa: ANN001
        if fullname not in (PACKAGE, FLAGS_MODULE):
            return None
        if fullname == FLAGS_MODULE:
            sys.meta_path.remove(self)  # once: torchmetrics is imported once per process
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        if spec is not None and spec.loader is not None:
            spec.loader = _FlagsLoader(spec.loader)
        return spec


def leave_out_unused_backends() -> None:
    """Make torchmetrics skip transformers, torchvision, matplotlib and scipy.signal in this process (idempotent).

    If torchmetrics is already imported, its modules have read the flags; nothing is changed then."""
    if os.environ.get("WAV2EMO_TORCHMETRICS_ALL_BACKENDS") == "1":
        return
    if PACKAGE in sys.modules or any(isinstance(f, _FlagsFinder) for f in sys.meta_path):
        return
    sys.meta_path.insert(0, _FlagsFinder())
