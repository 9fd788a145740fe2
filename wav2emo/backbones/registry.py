"""The one registry of backbone families: config.json ``model_type`` -> the :class:`Backbone` subclass that runs it.

A family module registers its class with :func:`register_family` (a decorator) when imported; the built-in ones
are imported by :mod:`wav2emo.backbones.loading`, a plugin's by whoever uses it (see tests/test_backbone_plugin.py).
"""

from __future__ import annotations

from wav2emo.backbones.family import Backbone
from wav2emo.backbones.source import BackboneError
from wav2emo.registry import Registry

# config.json model_type -> family (wav2emo.registry.Registry: the one kind every extension point uses).
_FAMILIES: Registry[type[Backbone]] = Registry("backbone family for model_type", error=BackboneError)


def register_family(cls: type[Backbone]) -> type[Backbone]:
    """Make ``cls`` the family of every config ``model_type`` in ``cls.model_types`` (use as a decorator)."""
    if not (isinstance(cls, type) and issubclass(cls, Backbone)) or not cls.family or not cls.model_types:
        raise TypeError(f"register_family({cls!r}): expected a Backbone subclass with `family` and `model_types` set")
    for model_type in cls.model_types:
        known = _FAMILIES.get(model_type)
        if known is not None and known.__qualname__ != cls.__qualname__:
            raise BackboneError(f"model_type {model_type!r} is already served by family {known.family!r} ({known})")
        _FAMILIES.register(model_type, cls, replace=True)  # the same class again (a module imported twice) is fine
    return cls


def registered_families() -> dict[str, type[Backbone]]:
    """model_type -> family class, of every family registered so far."""
    return dict(_FAMILIES)


def family_for(model_type: str | None, where: str = "") -> type[Backbone]:
    """The family registered for ``model_type``; one line naming it and the supported ones otherwise."""
    cls = _FAMILIES.get(str(model_type))
    if cls is None:
        names = sorted({f"{c.family} ({t})" for t, c in _FAMILIES.items()})
        raise BackboneError(
            f"{where or 'backbone'}: model_type {model_type!r} is not a supported backbone family; expected one of "
            f"{', '.join(names)} (a new family is one module under wav2emo/backbones/families/, see "
            "docs/architecture.md)"
        )
    return cls
