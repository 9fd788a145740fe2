"""openSMILE in N worker processes (:mod:`wav2emo.features.smile_worker`), fed paths, returning float32 arrays.

Why this shape: openSMILE is not thread-safe (audeering/opensmile-python issue 41), so each worker is a
process with one openSMILE engine; the workers read and decode the audio themselves (a path goes in, 352
bytes of functionals come out: nothing big is pickled or piped); they start in a fraction of a second
(no torch, no pandas) and all at once, when the pool is created, so a caller can start the pool and do other
work (load a backbone) before it asks for the feature names or the results.  Each worker has ``depth``
requests queued, so it never waits for the parent between clips.

Stopping is prompt and complete: :meth:`close` (also on Ctrl-C or any error in the caller, or when a
background build is told to stop, :mod:`wav2emo.features.overlap`) closes the workers' input, sends
SIGTERM, and SIGKILL to any still alive after ``grace_s``; the workers ignore SIGINT, so a Ctrl-C to the
process group reaches only the parent, which then stops them.  They also die with the thread that started
them (PR_SET_PDEATHSIG), so the pool is closed by the thread that created it.
"""

from __future__ import annotations

import json
import math
import os
import queue
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from wav2emo.errors import UserError
from wav2emo.features.overlap import check_stop

_SINGLE_THREADED = {k: "1" for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}


class SmileWorkerError(UserError, RuntimeError):
    """A worker could not start openSMILE or process a clip; the message names the clip or the setting."""


def _read_exact(f, n: int) -> bytes:
    data = f.read(n)
    if data is None or len(data) != n:
        raise EOFError(f"expected {n} bytes from the worker, got {0 if data is None else len(data)}")
    return data


def _read_reply(f) -> tuple[dict[str, Any], np.ndarray | None]:
    (size,) = struct.unpack("<Q", _read_exact(f, 8))
    header = json.loads(_read_exact(f, size))
    if "shape" not in header:
        return header, None
    shape = tuple(header["shape"])
    data = _read_exact(f, 4 * math.prod(shape))
    return header, np.frombuffer(data, dtype="<f4").reshape(shape)


def close_inputs(procs: Sequence[subprocess.Popen], *, terminate: bool) -> None:
    """Close each worker's stdin (a worker waiting for its next request sees the end and exits); with
    ``terminate``, send each one SIGTERM right after (if it is still running), worker by worker."""
    for p in procs:
        try:
            if p.stdin is not None:
                p.stdin.close()
        except OSError:
            pass
        if terminate and p.poll() is None:
            p.terminate()


def wait_or_kill(proc: subprocess.Popen, timeout_s: float) -> None:
    """Wait up to ``timeout_s`` for ``proc`` to exit; SIGKILL it if it has not, and reap it."""
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class SmilePool:
    """``num_workers`` openSMILE processes for one feature set and level, started at construction."""

    def __init__(self, num_workers: int, feature_set: str, level: str, *, nice: int = 0, depth: int = 2,
                 grace_s: float = 2.0, error: Callable[[str], BaseException] = SmileWorkerError) -> None:
        self.grace_s, self.depth, self._error = grace_s, max(1, depth), error
        self._stop = threading.Event()
        self._hello: list[dict[str, Any] | None] = []
        self._jobs: queue.Queue = queue.Queue()
        self._results: queue.Queue = queue.Queue()
        self._go = threading.Event()
        self._used = False
        package_root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, **_SINGLE_THREADED,
               "PYTHONPATH": os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")]))}
        self.procs: list[subprocess.Popen] = []
        self._threads: list[threading.Thread] = []
        try:
            for _ in range(max(1, int(num_workers))):
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "wav2emo.features.smile_worker", feature_set, level, str(int(nice))],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                ))
                self._hello.append(None)
            for k, p in enumerate(self.procs):
                t = threading.Thread(target=self._serve, args=(k, p), name=f"wav2emo-smile-{p.pid}", daemon=True)
                t.start()
                self._threads.append(t)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> SmilePool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # Worker threads ----------------------------------------------------------------------------------------
    def _serve(self, k: int, proc: subprocess.Popen) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        try:
            hello, _ = _read_reply(proc.stdout)
        except (OSError, ValueError, EOFError) as e:
            hello = {"error": f"the worker process {proc.pid} stopped before it was ready (exit code {proc.poll()}; {e})"}
        self._hello[k] = hello
        if "error" in hello:
            return
        while not self._go.wait(0.1):
            if self._stop.is_set():
                return
        inflight: deque[tuple[int, str]] = deque()

        def send() -> None:
            try:
                i, path = self._jobs.get_nowait()
            except queue.Empty:
                return
            inflight.append((i, path))
            proc.stdin.write((json.dumps(path) + "\n").encode())

        try:
            for _ in range(self.depth):
                send()
            proc.stdin.flush()
            while inflight and not self._stop.is_set():
                header, arr = _read_reply(proc.stdout)
                i, path = inflight.popleft()
                send()
                proc.stdin.flush()
                if arr is None:
                    self._results.put((i, self._error(f"{path}: openSMILE failed: {header.get('error')}")))
                else:
                    self._results.put((i, arr))
        except (OSError, ValueError, EOFError) as e:
            if not self._stop.is_set():
                for i, path in inflight:
                    self._results.put((i, self._error(
                        f"{path}: the openSMILE worker process {proc.pid} stopped (exit code {proc.poll()}; {e})")))

    # Caller side -------------------------------------------------------------------------------------------
    def _wait(self, ready: Callable[[], bool], what: str) -> None:
        while not ready():
            check_stop()
            if self._stop.is_set():
                raise self._error(f"the openSMILE pool was closed while {what}")
            time.sleep(0.01)

    def feature_names(self) -> list[str]:
        """The feature names every worker reported once ready (waits for all of them to start)."""
        self._wait(lambda: all(h is not None for h in self._hello), "starting")
        errors = [h["error"] for h in self._hello if h is not None and "error" in h]
        if errors:
            raise self._error(f"openSMILE could not start: {errors[0]}")
        names = [h["names"] for h in self._hello if h is not None]
        if any(n != names[0] for n in names):
            raise self._error("the openSMILE workers disagree on the feature names")
        return list(names[0])

    def imap_unordered(self, paths: Sequence[str]) -> Iterator[tuple[int, np.ndarray]]:
        """``(i, features of paths[i])`` as the workers finish them (float32); the first failure is raised."""
        if self._used:
            raise RuntimeError("a SmilePool runs one list of paths; start another pool for more")
        self._used = True
        self.feature_names()
        for item in enumerate(paths):
            self._jobs.put(item)
        self._go.set()
        for _ in range(len(paths)):
            while True:
                try:  # a short timeout keeps the main thread responsive to Ctrl-C and to stop requests
                    i, res = self._results.get(timeout=0.1)
                    break
                except queue.Empty:
                    check_stop()
                    if not any(t.is_alive() for t in self._threads) and self._results.empty():
                        raise self._error("every openSMILE worker process stopped before the work was done") from None
            if isinstance(res, BaseException):
                raise res
            yield i, res

    def close(self) -> None:
        """Stop every worker now (no waiting for queued clips); never leaves a process behind."""
        self._stop.set()
        close_inputs(self.procs, terminate=True)
        deadline = time.monotonic() + self.grace_s
        for p in self.procs:
            wait_or_kill(p, max(0.0, deadline - time.monotonic()))
        for t in self._threads:
            t.join(timeout=1.0)
        for p in self.procs:
            if p.stdout is not None:
                p.stdout.close()
