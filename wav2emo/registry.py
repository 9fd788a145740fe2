"""Named parts a config can ask for by name, and the one way to add your own.

wav2emo's configs pick named parts: a feature kind (``features.*.kind``), a waveform or feature augmentation
(the keys under ``augment.wave`` / ``augment.features``), ... Each family of parts is one :class:`Registry`.
Built-in parts are listed by import path and imported on first use, so naming a part never imports the
heavy code of the others (openSMILE, transformers).

Adding a part of your own is one module plus one config, without editing wav2emo::

    # my_lab/parts.py
    from wav2emo.augment.config import WAVE_AUGMENTATIONS

    @WAVE_AUGMENTATIONS.register("telephone")
    class Telephone: ...

    # on the command line (or in an experiment config): import the module, then name the part
    python -m wav2emo.train plugins=[my_lab.parts] augment.wave.telephone.p=0.5

Networks and heads are the one exception that needs no registry: a ``conf/model/<name>.yaml`` names its
class with Hydra's ``_target_``, which may be any importable class (``_target_: my_lab.heads.MyHead``).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any, Generic, TypeVar

from wav2emo.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Names -> parts of one family. ``builtin`` maps names to ``"module:attribute"`` paths (imported lazily)."""

    def __init__(self, family: str, builtin: dict[str, str] | None = None) -> None:
        self.family = family
        self._paths = dict(builtin or {})
        self._parts: dict[str, T] = {}

    def register(self, name: str, part: T | None = None) -> Any:
        """``REGISTRY.register("name", part)``, or ``@REGISTRY.register("name")`` above a class or function.

        A name that is already taken is refused (say which part holds it), so two plugins never silently
        replace each other or a built-in part.
        """
        if not isinstance(name, str) or not name:
            raise ConfigError(f"{self.family}: a part's name must be a non-empty string, got {name!r}")

        def add(obj: T) -> T:
            if name in self._paths or (name in self._parts and self._parts[name] is not obj):
                held = self._paths.get(name) or _path_of(self._parts[name])
                raise ConfigError(f"{self.family} {name!r} is already registered ({held}); choose another name")
            self._parts[name] = obj
            return obj

        return add if part is None else add(part)

    def get(self, name: str) -> T:
        """The part registered as ``name``; an unknown name is one line listing the known ones."""
        if name in self._parts:
            return self._parts[name]
        if name in self._paths:
            module, attr = self._paths[name].split(":")
            return getattr(importlib.import_module(module), attr)
        raise ConfigError(f"{self.family} {name!r} is unknown; expected one of {self.names()} "
                          f"(a part of your own: register it in a module and pass plugins=[that.module])")

    def __contains__(self, name: object) -> bool:
        return name in self._paths or name in self._parts

    def names(self) -> list[str]:
        return sorted({*self._paths, *self._parts})


def _path_of(obj: Any) -> str:
    return f"{getattr(obj, '__module__', '?')}:{getattr(obj, '__qualname__', repr(obj))}"


def import_plugins(modules: Iterable[str] | str | None) -> list[str]:
    """Import the ``plugins`` a config lists (modules that register parts of their own) before a run builds
    anything. A module that cannot be imported is one line naming it."""
    if modules is None:
        return []
    if isinstance(modules, str):
        modules = [modules]
    done = []
    for name in modules:
        try:
            importlib.import_module(str(name))
        except ImportError as e:
            raise ConfigError(f"plugins: cannot import {name!r} ({e}); expected an importable module that "
                              "registers wav2emo parts (is it on PYTHONPATH?)") from e
        done.append(str(name))
    return done

