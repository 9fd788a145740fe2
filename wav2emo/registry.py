"""Named parts a config can ask for by name, and the one way to add your own.

wav2emo's configs pick named parts: a feature kind (``features.*.kind``), a waveform or feature augmentation
(the keys under ``augment.wave`` / ``augment.features``), ... Each family of parts is one :class:`Registry`.
Built-in parts are listed by import path and imported on first use, so naming a part never imports the
heavy code of the others (openSMILE, transformers).

Adding a part of your own is one module plus one config, without editing wav2emo: a module of yours (say
``my_lab/parts.py``) decorates its class with ``@WAVE_AUGMENTATIONS.register("telephone")`` (the registry lives in
``wav2emo.augment.config``), and the run imports that module before it builds anything, then names the part::

    python -m wav2emo.train plugins=[my_lab.parts] augment.wave.telephone.p=0.5

The registries: ``wav2emo.features.FEATURE_KINDS``, ``wav2emo.augment.config.WAVE_AUGMENTATIONS`` and
``FEATURE_AUGMENTATIONS``, ``wav2emo.data.registry.RECIPES`` and ``PROTOCOLS`` (``register_recipe``,
``register_protocol``), the backbone families (``wav2emo.backbones.register_family``, by config.json model_type).

Networks and heads are the one exception that needs no registry: a ``conf/model/<name>.yaml`` names its
class with Hydra's ``_target_``, which may be any importable class (``_target_: my_lab.heads.MyHead``).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Iterator, MutableMapping
from typing import Any, TypeVar

from wav2emo.errors import ConfigError, UserError

T = TypeVar("T")


class Registry(MutableMapping[str, T]):
    """Names -> parts of one family, a mapping. ``builtin`` maps names to ``"module:attribute"`` paths, imported on
    first use; ``error`` is the :class:`~wav2emo.errors.UserError` an unknown or doubly registered name raises."""

    def __init__(self, family: str, builtin: dict[str, str] | None = None,
                 error: type[UserError] = ConfigError) -> None:
        self.family, self.error = family, error
        self._paths = dict(builtin or {})
        self._parts: dict[str, T] = {}

    def register(self, name: str, part: T | None = None, *, replace: bool = False) -> Any:
        """``REGISTRY.register("name", part)``, or ``@REGISTRY.register("name")`` above a class or function.

        A name that is already taken by another part is refused (saying which part holds it) unless ``replace``,
        so two plugins never silently replace each other or a built-in part.
        """
        if not isinstance(name, str) or not name:
            raise self.error(f"{self.family}: a part's name must be a non-empty string, got {name!r}")

        def add(obj: T) -> T:
            held = self._parts.get(name)
            if not replace and (name in self._paths or (held is not None and held is not obj)):
                where = self._paths.get(name) or _path_of(held)
                raise self.error(f"{self.family} {name!r} is registered already ({where}); choose another name or "
                                 "register with replace=True")
            self._paths.pop(name, None)
            self._parts[name] = obj
            return obj

        return add if part is None else add(part)

    def require(self, name: str) -> T:
        """The part registered as ``name``; an unknown name is one line listing the known ones."""
        try:
            return self[name]
        except KeyError:
            raise self.error(f"{self.family} {name!r} is unknown; expected one of {self.names()} (a part of your "
                             f"own: register it in a module and pass plugins=[that.module])") from None

    def names(self) -> list[str]:
        return sorted(self)

    # The mapping: built-in parts are imported when first looked up.
    def __getitem__(self, name: str) -> T:
        if name in self._parts:
            return self._parts[name]
        if name in self._paths:
            module, attr = self._paths[name].split(":")
            return getattr(importlib.import_module(module), attr)
        raise KeyError(name)

    def __setitem__(self, name: str, part: T) -> None:
        self._paths.pop(name, None)
        self._parts[name] = part

    def __delitem__(self, name: str) -> None:
        if name not in self:
            raise KeyError(name)
        self._paths.pop(name, None)
        self._parts.pop(name, None)

    def __contains__(self, name: object) -> bool:
        return name in self._paths or name in self._parts

    def __iter__(self) -> Iterator[str]:
        return iter([*self._paths, *(n for n in self._parts if n not in self._paths)])

    def __len__(self) -> int:
        return len(set(self._paths) | set(self._parts))


def _path_of(obj: Any) -> str:
    """Where a registered part comes from: ``module:Class`` (an instance: its class, with its ``name`` if any)."""
    if isinstance(obj, type) or callable(obj) and hasattr(obj, "__qualname__"):
        return f"{getattr(obj, '__module__', '?')}:{obj.__qualname__}"
    name = getattr(obj, "name", None)
    return f"a {type(obj).__module__}:{type(obj).__qualname__}" + (f" named {name!r}" if name else "")


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

