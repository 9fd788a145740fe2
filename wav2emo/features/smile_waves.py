"""openSMILE on waveforms already in memory, in worker processes that stay up: prediction's eGeMAPS.

Prediction cuts recordings into windows in memory (resampled, mixed to mono), so the extraction pool's
path-per-request protocol does not fit: here each request carries the window's float32 samples through the
worker's stdin (:mod:`wav2emo.features.smile_worker`, same engine and values as the cache's eGeMAPS and as
``opensmile.Smile.process_signal``).  :meth:`SmileWavePool.submit` returns a future at once, so a caller queues a
window's eGeMAPS as soon as it has read the window and collects it after its backbone pass: the CPU cores
compute eGeMAPS while the GPU (or the CPU's torch threads) run the network.  One thread per worker process
keeps one request in flight on it; the pool serves any number of batches until :meth:`close`.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from wav2emo.features.smile_pool import (
    _SINGLE_THREADED,
    SmileWorkerError,
    _read_reply,
    close_inputs,
    wait_or_kill,
)


class SmileWavePool:
    """``num_workers`` openSMILE worker processes for one feature set and level, fed waveforms."""

    def __init__(self, num_workers: int, feature_set: str = "eGeMAPSv02", level: str = "functionals", *,
                 nice: int = 0) -> None:
        """``nice`` > 0 lowers the workers' priority: the process they serve keeps the cores it needs."""
        package_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, **_SINGLE_THREADED,
               "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
        self.num_workers = max(1, int(num_workers))
        self.procs: list[subprocess.Popen] = []
        self._idle: queue.Queue = queue.Queue()
        self._names: list[str] | None = None
        self._lock = threading.Lock()
        self._closed = False
        try:
            for _ in range(self.num_workers):
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "wav2emo.features.smile_worker", feature_set, level, str(int(nice))],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env))
        except BaseException:
            self.close()
            raise
        self._hellos: list[dict | None] = [None] * len(self.procs)
        self._executor = ThreadPoolExecutor(max_workers=len(self.procs), thread_name_prefix="wav2emo-smile-wave")
        for k in range(len(self.procs)):
            self._idle.put(k)

    def feature_names(self) -> list[str]:
        """The names every worker reported once started (waits for them)."""
        with self._lock:
            if self._names is None:
                for k, p in enumerate(self.procs):
                    try:
                        self._hellos[k] = _read_reply(p.stdout)[0]
                    except (OSError, ValueError, EOFError) as e:
                        raise SmileWorkerError(f"the openSMILE worker process {p.pid} stopped before it was ready "
                                               f"(exit code {p.poll()}; {e})") from e
                    if "error" in self._hellos[k]:
                        raise SmileWorkerError(f"openSMILE could not start: {self._hellos[k]['error']}")
                names = [h["names"] for h in self._hellos]
                if any(n != names[0] for n in names):
                    raise SmileWorkerError("the openSMILE workers disagree on the feature names")
                self._names = list(names[0])
        return list(self._names)

    def _run(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        k = self._idle.get()  # as many threads as workers: one is always free for this thread
        p = self.procs[k]
        try:
            data = np.ascontiguousarray(wave, dtype="<f4").reshape(-1)
            header = json.dumps({"wave": int(data.size), "sample_rate": int(sample_rate)}) + "\n"
            try:
                p.stdin.write(header.encode() + data.tobytes())
                p.stdin.flush()
                reply, arr = _read_reply(p.stdout)
            except (OSError, ValueError, EOFError) as e:
                raise SmileWorkerError(f"the openSMILE worker process {p.pid} stopped (exit code {p.poll()}; {e})") from e
            if arr is None:
                raise SmileWorkerError(f"openSMILE failed on a {data.size / sample_rate:.2f} s window: {reply.get('error')}")
            return arr
        finally:
            self._idle.put(k)

    def submit(self, wave: np.ndarray, sample_rate: int) -> Future:
        """A future of openSMILE's ``(frames, n_features)`` float32 output for one mono waveform."""
        if self._closed:
            raise SmileWorkerError("the openSMILE pool is closed")
        self.feature_names()  # workers ready (a start-up failure is raised here, once)
        return self._executor.submit(self._run, wave, sample_rate)

    def map(self, waves: list[np.ndarray], sample_rate: int) -> list[np.ndarray]:
        return [f.result() for f in [self.submit(w, sample_rate) for w in waves]]

    def close(self) -> None:
        """Stop every worker (queued requests fail); never leaves a process behind."""
        self._closed = True
        executor = getattr(self, "_executor", None)
        close_inputs(self.procs, terminate=False)
        for p in self.procs:
            wait_or_kill(p, 2.0)
            if p.stdout is not None:
                p.stdout.close()
        if executor is not None:
            executor.shutdown(wait=False, cancel_futures=True)

    def __enter__(self) -> SmileWavePool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass
