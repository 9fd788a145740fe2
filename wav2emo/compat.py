"""Does the installed environment fit wav2emo?  Answered from package metadata, before anything heavy imports.

A mismatched torch/torchaudio pair does not fail politely: ``import torchaudio`` raises an ``OSError`` about
``libtorchaudio.so`` deep inside transformers' imports.  The entry points call :func:`require_compatible`
first, so a user sees one line with the versions found and the command that fixes it instead.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable
from importlib import metadata

LOCKED_INSTALL = 'python -m pip install -e ".[dev]" -c requirements/lock.txt'


def installed_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def base_version(version: str) -> str:
    """``2.11.0+cu130`` -> ``2.11.0``: the local build tag says CPU or CUDA, not which release."""
    return version.split("+", 1)[0]


def torch_pair_problem(torch_version: str | None, torchaudio_version: str | None) -> str | None:
    """torchaudio's compiled library loads only beside the torch release it was built for (same x.y.z)."""
    if torch_version is None or torchaudio_version is None:
        return None
    if base_version(torch_version) == base_version(torchaudio_version):
        return None
    want = base_version(torch_version)
    return (
        f"torchaudio {torchaudio_version} does not fit torch {torch_version} (torchaudio's library loads only "
        f"beside the torch release it was built for); fix: python -m pip install 'torchaudio=={want}' "
        f"(or reinstall with the lock: {LOCKED_INSTALL})"
    )


def _requirements(dist: str = "wav2emo") -> list[str]:
    try:
        requires = metadata.requires(dist) or []
    except metadata.PackageNotFoundError:  # running from a source tree that is not installed
        return []
    return [r for r in requires if "extra ==" not in r]


def requirement_problems(requirements: Iterable[str]) -> list[str]:
    """Installed packages that miss wav2emo's declared ranges (e.g. a transformers too old for our code)."""
    try:
        from packaging.requirements import InvalidRequirement, Requirement
        from packaging.version import InvalidVersion, Version
    except ImportError:  # packaging comes with lightning and pip; without it, skip this finer check
        return []
    problems = []
    for line in requirements:
        try:
            req = Requirement(line)
        except InvalidRequirement:
            continue
        if req.marker is not None and not req.marker.evaluate():
            continue
        found = installed_version(req.name)
        if found is None:
            problems.append(f"{req.name} is not installed (wav2emo needs {req}); fix: {LOCKED_INSTALL}")
            continue
        try:
            ok = req.specifier.contains(Version(base_version(found)), prereleases=True)
        except InvalidVersion:
            continue
        if not ok:
            problems.append(
                f"{req.name} {found} is installed but wav2emo needs {req.name}{req.specifier}; "
                f"fix: python -m pip install '{req.name}{req.specifier}' (or {LOCKED_INSTALL})"
            )
    return problems


def environment_problems() -> list[str]:
    """Every known misfit of the installed packages, each as one actionable line (empty when all fit)."""
    torch_version, torchaudio_version = installed_version("torch"), installed_version("torchaudio")
    pair = torch_pair_problem(torch_version, torchaudio_version)
    requirements = _requirements()
    if torch_version and torchaudio_version:
        # Both present: whether they fit each other is what matters (a user may run a newer matching pair).
        requirements = [r for r in requirements if not re.match(r"torch(audio)?\b(?![-_.\w])", r)]
    return ([pair] if pair else []) + requirement_problems(requirements)


def import_problem(module: str = "torchaudio") -> str | None:
    """Try the import that breaks first when binaries do not fit (torchaudio: CPU vs CUDA builds, ABI)."""
    try:
        __import__(module)
    except (OSError, ImportError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        first = re.sub(r"\s+", " ", first)[:300]
        return (
            f"cannot import {module} ({type(e).__name__}: {first}) with torch {installed_version('torch')} and "
            f"torchaudio {installed_version('torchaudio')}; fix: {LOCKED_INSTALL} "
            "(a CPU-only torch needs the matching CPU torchaudio: see README, 'CPU-only machines')"
        )
    return None


def require_compatible(*, try_import: bool = True) -> None:
    """For the command-line entry points: on a misfit, say it in one line per problem and exit with status 2."""
    problems = environment_problems()
    if not problems and try_import:
        problem = import_problem("torchaudio")
        problems = [problem] if problem else []
    if problems:
        for p in problems:
            print(f"wav2emo: {p}", file=sys.stderr)
        raise SystemExit(2)
