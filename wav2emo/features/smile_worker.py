"""One openSMILE worker process: ``python -m wav2emo.features.smile_worker FEATURE_SET LEVEL [NICE]``.

Why a plain subprocess and not multiprocessing: spawn and forkserver children import the caller's
``__main__`` (a script without a ``__main__`` guard runs again, or hangs), and fork is unsafe in a process
that has started threads or CUDA.  This worker imports only numpy, soundfile and openSMILE's ctypes
binding (:mod:`wav2emo.features.smile_api`; no torch, no pandas), so it is ready in a fraction of a
second; torch comes in only if a file needs resampling.  It ignores SIGINT (its parent decides when to stop
and kills it), dies with the parent thread that started it (PR_SET_PDEATHSIG on Linux) and exits at end
of input.  ``NICE`` lowers its priority (used while a GPU extraction runs beside it: the process feeding
the GPU keeps its cores).

Protocol on stdin/stdout (stdout is kept for it; anything a library prints goes to stderr).  First, one
reply with no request: the feature names (``{"names": [...]}``) or ``{"error": "..."}``.  Then one JSON
line per request, the audio path (or ``{"wave": N, "sample_rate": SR}`` followed by N little-endian float32
samples: a waveform already in memory); one reply per request, in order.  A reply is an 8-byte little-endian
header length, a JSON header (``{"shape": [...]}`` or ``{"error": "..."}``), then the float32 values.
"""

from __future__ import annotations

import json
import os
import signal
import struct
import sys


def _die_with_parent() -> None:
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: end of input still stops the worker
        pass


def _reply(out, header: dict, data: bytes = b"") -> None:
    raw = json.dumps(header).encode()
    out.write(struct.pack("<Q", len(raw)) + raw + data)
    out.flush()


def _read_wave(f, n: int):
    import numpy as np

    data = f.read(4 * n)
    if data is None or len(data) != 4 * n:
        raise EOFError(f"expected {4 * n} bytes of samples, got {0 if data is None else len(data)}")
    return np.frombuffer(data, dtype="<f4")


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints of libraries must not corrupt the replies
    feature_set, level = argv[0], argv[1]
    if len(argv) > 2 and int(argv[2]) > 0:
        os.nice(int(argv[2]))
    from wav2emo.features import egemaps

    try:
        names = egemaps.init_engine(feature_set, level)
    except Exception as e:  # noqa: BLE001 - reported to the parent, which raises it
        _reply(out, {"error": f"{type(e).__name__}: {e}"})
        return 1
    _reply(out, {"names": names})
    stdin = sys.stdin.buffer
    for line in stdin:
        request = json.loads(line)
        try:
            if isinstance(request, dict):  # a waveform in memory (wav2emo.features.smile_waves)
                arr = egemaps.smile_features(_read_wave(stdin, int(request["wave"])), int(request["sample_rate"]))
            else:
                arr = egemaps._process_path(request)
            header, data = {"shape": list(arr.shape)}, arr.astype("<f4", copy=False).tobytes()
        except Exception as e:  # noqa: BLE001 - reported to the parent, which names the clip
            header, data = {"error": f"{type(e).__name__}: {e}"}, b""
        _reply(out, header, data)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
