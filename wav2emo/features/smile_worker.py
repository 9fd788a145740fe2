"""One openSMILE worker process: ``python -m wav2emo.features.smile_worker FEATURE_SET LEVEL``.

Why a plain subprocess and not multiprocessing: spawn and forkserver children import the caller's
``__main__`` (a script without a ``__main__`` guard runs again, or hangs), and a pool that gets
Ctrl-C together with its parent used to hang for minutes and leave orphans.  This worker imports
only wav2emo's audio reader and openSMILE, ignores SIGINT (its parent decides when to stop and kills
it), dies with its parent (PR_SET_PDEATHSIG on Linux) and exits at end of input.

Protocol on stdin/stdout (stdout is kept for it; anything a library prints goes to stderr): one JSON
line per request, the audio path; one reply per request: 8-byte little-endian header length, a JSON
header (``{"shape": [...]}`` or ``{"error": "..."}``), then the float64 values.
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


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _die_with_parent()
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # stray prints of libraries must not corrupt the replies
    feature_set, level = argv[0], argv[1]
    from wav2emo.features import egemaps

    egemaps._init_worker(feature_set, level)
    for line in sys.stdin.buffer:
        path = json.loads(line)
        try:
            arr = egemaps._process_path(path)
            header, data = {"shape": list(arr.shape)}, arr.astype("<f8", copy=False).tobytes()
        except Exception as e:  # noqa: BLE001 - reported to the parent, which names the clip
            header, data = {"error": f"{type(e).__name__}: {e}"}, b""
        raw = json.dumps(header).encode()
        out.write(struct.pack("<Q", len(raw)) + raw + data)
        out.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
