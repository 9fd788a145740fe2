"""Loading checkpoints safely: tensors and plain values only, and an error that names the file.

Why: ``torch.load(..., weights_only=False)`` runs whatever a pickle asks for, so a crafted ``.ckpt``
(downloaded, shared, or planted in a run folder) could execute code on the machine that evaluates it.
``weights_only=True`` unpickles tensors, containers and numbers only, plus the globals allowed by
:data:`SAFE_GLOBALS`.  The checkpoints wav2emo.train writes (Lightning's state: weights, optimizer
and loop state, ModelCheckpoint's callback state, hyper-parameters, and the ``wav2emo`` entry with the
config as plain containers) need no extra global with torch 2.11 and lightning 2.6 (checked with
``torch.serialization.get_unsafe_globals_in_checkpoint``: none), so the allow-list starts empty.

Lightning's own loading (``trainer.fit(ckpt_path=...)`` to resume, ``trainer.test(ckpt_path=...)``)
passes ``weights_only=None`` to ``torch.load``, whose default has been ``True`` since torch 2.6: resume
is safe too (tested; unless TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD is set in the environment).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from wav2emo.errors import UserError

# Globals a wav2emo checkpoint may need beyond tensors and plain containers (none today; add a class
# here only if it is data, never a callable that does something when it is constructed).
SAFE_GLOBALS: list[Any] = []


class CheckpointError(UserError, ValueError):
    """A checkpoint file that cannot or must not be loaded; the message names the file and why."""


EXPECTED = "expected a .ckpt file written by `python -m wav2emo.train` (a torch zip archive)"


def load_checkpoint(path: str | os.PathLike, *, extra_globals: Iterable[Any] = ()) -> dict[str, Any]:
    """The checkpoint at ``path`` as a dict, loaded with ``weights_only=True`` onto the CPU.

    Raises :class:`CheckpointError` (one line, naming the file) for a missing, empty, truncated or
    foreign file, and for one holding Python objects outside the allow-list (a crafted pickle).
    """
    path = Path(path)
    if path.is_dir():  # a run or fold folder where one checkpoint is asked for: name the checkpoints it holds
        held = sorted(str(p.relative_to(path)) for p in path.rglob("*.ckpt") if p.name != "last.ckpt")
        raise CheckpointError(f"{path}: a folder, not a checkpoint file; {EXPECTED}"
                              + (f"; it holds {len(held)}, e.g. {path / held[0]}" if held else "; it holds none"))
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file; {EXPECTED}")
    size = path.stat().st_size
    if size == 0:
        raise CheckpointError(f"{path}: the file is empty (0 bytes); {EXPECTED}")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(
            f"{path}: not a torch checkpoint ({size} bytes, not a zip archive: truncated, or another kind of "
            f"file); {EXPECTED}"
        )
    try:
        with torch.serialization.safe_globals([*SAFE_GLOBALS, *extra_globals]):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()
        reason = next((line.strip() for line in first if "GLOBAL" in line or "Unsupported" in line), first[0] if first else "")
        raise CheckpointError(
            f"{path}: refused to load: it holds Python objects outside the allow-list of safe types "
            f"({reason[:200]}). A checkpoint written by wav2emo.train holds only tensors and plain values, "
            "so this file was made otherwise; do not load it unless you know where it came from"
        ) from None
    except (EOFError, RuntimeError, zipfile.BadZipFile, OSError, ValueError, KeyError) as e:
        raise CheckpointError(
            f"{path}: cannot be read as a torch checkpoint ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}); "
            + EXPECTED
        ) from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: holds a {type(ckpt).__name__}, not a checkpoint dict; {EXPECTED}")
    return ckpt
