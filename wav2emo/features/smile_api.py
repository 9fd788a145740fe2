"""openSMILE's C API on one waveform, exactly as ``opensmile.Smile.process_signal`` runs it, minus the wrapper.

Why: ``process_signal`` goes through audinterface and pandas (a DataFrame per clip), and importing the
``opensmile`` package pulls in pandas, audobject and audinterface (~0.5-1 s per process).  The work itself is
openSMILE's C++ (~26 ms per second of audio on one core); a worker process that starts in a fraction of a
second and returns float32 arrays keeps the pool close to N x one core.

What stays identical: the config file and the options ``Smile._options()`` builds, the int16 conversion of
``Smile._extract`` (``signal * 32768`` in float32, then ``astype(int16)``), and the output (openSMILE's float32
frames; a clip that yields no frame gives one row of NaN, as opensmile-python does).  One difference in how:
opensmile-python makes a new openSMILE instance per clip (parsing the config, ~11 ms); here a finished
instance is reset (``smile_reset``, the sink callback registered again as its documentation asks) and runs the
next clip, with exactly the values a new one gives (checked clip by clip on all 1440 RAVDESS clips and 240
synthetic ones, both levels, and in the tests); it saves the config parsing of a new instance (a few ms a clip,
a few % of a RAVDESS clip).  opensmile-python's own ctypes
binding (``opensmile/core/lib.py``) and constants (``opensmile/core/config.py``) are loaded by file path, so
nothing is re-declared here and the ``opensmile`` package itself is not imported.  If a future
opensmile-python moves them, :class:`SmileEngine` falls back to ``opensmile.Smile`` (same values, slower).
``tests/test_smile_api.py`` checks the values against ``process_signal``.

openSMILE is not thread-safe, even with one instance per thread (audeering/opensmile issue 20): one engine
per process, never shared between threads.
"""

from __future__ import annotations

import importlib.util
import sys
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

LEVELS = {"functionals": "func", "lld": "lld"}  # our level name -> openSMILE's sink level (FeatureLevel values)


class SmileApiError(RuntimeError):
    """openSMILE's C API is unusable here (package missing, unknown feature set, internal error)."""


@lru_cache(maxsize=1)
def opensmile_dir() -> Path:
    """The installed ``opensmile`` package folder, found without importing it."""
    spec = importlib.util.find_spec("opensmile")
    if spec is None or not spec.submodule_search_locations:
        raise SmileApiError("eGeMAPS features need the opensmile package (pip install opensmile); it is not installed here")
    return Path(next(iter(spec.submodule_search_locations)))


def _load_file(name: str, path: Path) -> ModuleType:
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None or not path.is_file():
        raise FileNotFoundError(path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


@lru_cache(maxsize=1)
def _binding() -> tuple[ModuleType, Any]:
    """opensmile-python's ctypes binding and its ``config`` constants, loaded by path (no pandas, no audinterface)."""
    core = opensmile_dir() / "core"
    lib = _load_file("wav2emo._opensmile_lib", core / "lib.py")
    constants = _load_file("wav2emo._opensmile_config", core / "config.py").config
    for obj, attrs in ((lib, ("OpenSMILE",)), (constants, ("CONFIG_ROOT", "EXTERNAL_INPUT_CONFIG", "EXTERNAL_SOURCE_COMPONENT",
                                                           "EXTERNAL_OUTPUT_SINGLE_CONFIG", "EXTERNAL_OUTPUT_COMPONENT"))):
        for attr in attrs:  # an AttributeError here (a moved name) sends SmileEngine to its fallback
            getattr(obj, attr)
    return lib, constants


def config_file(feature_set: str) -> Path:
    """The config file of a standard feature set (``eGeMAPSv02`` -> ``.../egemaps/v02/eGeMAPSv02.conf``).

    A name that is the stem of exactly one shipped config is resolved by a file search (no import); any other
    (legacy aliases such as ``eGeMAPS``, ``IS09``) asks ``opensmile.FeatureSet``, which also refuses unknown names.
    """
    root = opensmile_dir() / "core" / "config"
    matches = sorted(root.rglob(f"{feature_set}.conf")) if feature_set.replace("_", "").isalnum() else []
    if len(matches) == 1:
        return matches[0]
    import opensmile

    try:
        fs = opensmile.FeatureSet[feature_set]
    except KeyError:
        raise SmileApiError(
            f"feature_set={feature_set!r}; expected one of {[f.name for f in opensmile.FeatureSet]}"
        ) from None
    return root / (fs.value + ".conf")


class SmileEngine:
    """One openSMILE feature set at one level, run on waveforms in this process (not thread-safe)."""

    RENEW_EVERY = 500  # clips one openSMILE instance runs before it is freed and made anew

    def __init__(self, feature_set: str = "eGeMAPSv02", level: str = "functionals", *, reuse: bool = True) -> None:
        if level not in LEVELS:
            raise SmileApiError(f"level={level!r}; expected one of {sorted(LEVELS)}")
        self.feature_set, self.level, self.reuse = feature_set, level, reuse
        self._spare: tuple[int, Any] | None = None  # (sample rate, an openSMILE instance reset after its last clip)
        self._uses = 0
        self.config = config_file(feature_set)
        self._smile: Any = None  # opensmile.Smile, only when the C binding could not be loaded
        try:
            self._lib, self._const = _binding()
        except (FileNotFoundError, AttributeError, ImportError, OSError):
            self._lib = None
            self._smile = _wrapper_smile(feature_set, level)
        if self._lib is not None:
            root = opensmile_dir() / "core" / self._const.CONFIG_ROOT
            self._options = {  # what Smile._options() + Smile._extract give, in the same order
                "sink": str(root / self._const.EXTERNAL_OUTPUT_SINGLE_CONFIG),
                "sinkLevel": LEVELS[level],
                "bufferModeRbConf": str(root / "shared/BufferModeRb.conf.inc"),
                "frameModeFunctionalsConf": str(root / "shared/FrameModeFunctionals.conf.inc"),
                "source": str(root / self._const.EXTERNAL_INPUT_CONFIG),
            }
        self.feature_names = self._names()

    @property
    def direct(self) -> bool:
        """True when openSMILE's C API is called directly (False: through opensmile.Smile, same values)."""
        return self._lib is not None

    def _new(self, sample_rate: int | None) -> Any:
        smile = self._lib.OpenSMILE()
        options = dict(self._options)
        if sample_rate is not None:
            options.update(sampleRate=int(sample_rate), nBits=16)
        try:
            smile.initialize(config_file=str(self.config), options=options, loglevel=2, log_file=None, debug=False)
        except Exception as e:
            smile.free()
            raise SmileApiError(f"openSMILE could not load {self.config}: {e}") from e
        return smile

    def _names(self) -> list[str]:
        if self._smile is not None:
            return list(self._smile.feature_names)
        smile = self._new(None)
        try:
            sink = self._const.EXTERNAL_OUTPUT_COMPONENT
            return [smile.external_sink_get_element_name(sink, i)
                    for i in range(smile.external_sink_get_num_elements(sink))]
        finally:
            smile.free()

    def process(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        """Mono float32 waveform -> ``(frames, n_features)`` float32 (one frame for functionals)."""
        if self._smile is not None:
            return self._smile.process_signal(wave, sample_rate).to_numpy(dtype=np.float32)
        signal = np.array(wave, dtype=np.float32, copy=True).reshape(-1)
        signal *= 32768
        pcm = signal.astype(np.int16).tobytes()
        rows: list[np.ndarray] = []

        def sink(data: np.ndarray, meta: Any) -> None:
            rows.append(data.copy())

        smile = self._take(int(sample_rate))
        finished = False
        try:
            smile.external_sink_set_callback_ex(self._const.EXTERNAL_OUTPUT_COMPONENT, sink)
            if smile.external_audio_source_write_data(self._const.EXTERNAL_SOURCE_COMPONENT, pcm) is False:
                raise SmileApiError(f"openSMILE's input buffer refused {len(pcm) // 2} samples (clip too long?)")
            smile.external_audio_source_set_eoi(self._const.EXTERNAL_SOURCE_COMPONENT)
            smile.run()
            finished = True
        finally:
            self._give_back(smile, int(sample_rate), finished)
        if not rows:  # what opensmile-python does for a clip too short to give a frame
            return np.full((1, len(self.feature_names)), np.nan, dtype=np.float32)
        return np.ascontiguousarray(np.vstack(rows), dtype=np.float32)

    def _take(self, sample_rate: int) -> Any:
        """The instance kept from the last clip at this rate (reset), or a new one."""
        if self._spare is not None and self._spare[0] == sample_rate:
            smile, self._spare = self._spare[1], None
            return smile
        self.close()
        self._uses = 0
        return self._new(sample_rate)

    def _give_back(self, smile: Any, sample_rate: int, finished: bool) -> None:
        """Keep a finished instance for the next clip (``smile_reset`` instead of parsing the config again; the
        next clip's values are identical, tests/test_smile_api.py checks it); renewed every :attr:`RENEW_EVERY`
        clips (each clip's sink callback object stays referenced by the instance)."""
        self._uses += 1
        if finished and self.reuse and self._uses < self.RENEW_EVERY:
            try:
                smile.reset()
            except Exception:  # noqa: BLE001 - a fresh instance next time
                smile.free()
                return
            self._spare = (sample_rate, smile)
            return
        smile.free()

    def close(self) -> None:
        """Free the kept openSMILE instance (the next clip makes a new one)."""
        if self._spare is not None:
            self._spare[1].free()
            self._spare = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _wrapper_smile(feature_set: str, level: str) -> Any:
    import opensmile

    fs = opensmile.FeatureSet[feature_set] if feature_set in opensmile.FeatureSet.__members__ else feature_set
    fl = {"functionals": opensmile.FeatureLevel.Functionals, "lld": opensmile.FeatureLevel.LowLevelDescriptors}[level]
    return opensmile.Smile(feature_set=fs, feature_level=fl)
