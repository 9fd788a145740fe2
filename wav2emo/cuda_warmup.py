"""CUDA's start, begun in a background thread while the process imports and builds the rest (issue 25).

A process's first CUDA call initialises the driver (``cuInit``) and creates the GPU's primary context, on the
main thread, while nothing else runs (in a training run: inside Lightning's ``Trainer(...)``).  :func:`warm_cuda`
starts both in a thread of its own through the driver API with ctypes, which releases the GIL during each
foreign call, so they overlap the main thread's imports (Lightning, about a second); torch's CUDA runtime then
finds the driver initialised and the same primary context ready.  What runs on the GPU does not change.

Only for a run on one GPU, the first one visible (``trainer.devices`` 1 or [0]), with an accelerator that is
or may be the GPU; where there is no driver, no GPU or any error, nothing happens and CUDA starts as before.
``WAV2EMO_CUDA_WARMUP=0`` switches it off.
"""

from __future__ import annotations

import ctypes
import os
import threading
from collections.abc import Mapping
from typing import Any

ENV = "WAV2EMO_CUDA_WARMUP"
GPU_ACCELERATORS = ("gpu", "cuda", "auto")
_STARTED = False


def wants_warmup(trainer: Mapping[str, Any] | None) -> bool:
    """True for a run on the first visible GPU alone (or an ``auto`` accelerator that may pick it)."""
    if os.environ.get(ENV, "1") == "0" or os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1"):
        return False
    trainer = trainer or {}
    if str(trainer.get("accelerator", "auto")).lower() not in GPU_ACCELERATORS:
        return False
    devices = trainer.get("devices", 1)
    if isinstance(devices, str | int):
        return str(devices) == "1"
    return isinstance(devices, list | tuple) and list(devices) == [0]


def _start_driver(result: dict[str, Any]) -> None:
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
        device, context = ctypes.c_int(), ctypes.c_void_p()
        for call, args in (("cuInit", (0,)), ("cuDeviceGet", (ctypes.byref(device), 0)),
                           ("cuDevicePrimaryCtxRetain", (ctypes.byref(context), device))):
            status = getattr(cuda, call)(*args)
            if status != 0:
                result["error"] = f"{call} returned {status}"
                return
        result["ready"] = True
    except (OSError, AttributeError) as e:  # no driver library here, or one without these calls
        result["error"] = f"{type(e).__name__}: {e}"


def warm_cuda(trainer: Mapping[str, Any] | None) -> threading.Thread | None:
    """Start CUDA's driver and the first GPU's primary context in a daemon thread when the run wants the GPU
    (:func:`wants_warmup`); the thread (its ``result`` dict says ``ready`` or the ``error``), or None."""
    global _STARTED
    if _STARTED or not wants_warmup(trainer):  # once a process (a multirun's jobs share it)
        return None
    _STARTED = True
    result: dict[str, Any] = {}
    thread = threading.Thread(target=_start_driver, args=(result,), name="wav2emo-cuda-warmup", daemon=True)
    thread.result = result  # type: ignore[attr-defined]
    thread.start()
    return thread
