"""What a recipe found wrong with a corpus copy, and the known release defects it applied.

:class:`Problems` collects problems by kind and either raises them together (a complete, sound copy required)
or sets aside the files whose names or layout do not parse, listing them in the corpus report
(``require_complete=false``); problems of the audio itself are never hidden.  :class:`Defects` applies a
recipe's :class:`~wav2emo.data.registry.KnownDefect` list as files are read.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .checks import CorpusReport
from .errors import CorpusError, listing
from .manifest import sha1_of_file
from .registry import KnownDefect

# problems of the audio itself: refused even with require_complete=false (a file that is not audio, or holds
# NaN, is a broken copy to repair; silent clips follow on_silent)
AUDIO_PROBLEMS = ("unreadable files", "audio that does not decode", "silent clips")


@dataclass
class Problems:
    """Problems by kind (each a line naming a file or value): raised together when a complete, sound copy
    is required, else set aside and listed in the corpus report (:meth:`settle`)."""

    items: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def add(self, kind: str, line: str) -> None:
        self.items[kind].append(line)

    def __bool__(self) -> bool:
        return any(self.items.values())

    def raise_if_any(self, root: Path | str) -> None:
        if not self:
            return
        lines = [f"{root}: the corpus copy has problems ({sum(map(len, self.items.values()))} in all):"]
        for kind, items in self.items.items():
            if items:
                lines.append(f"{kind} ({len(items)}):")
                lines.append(listing(items))
        lines.append("Set data.corpus.require_complete=false to set these files aside (listed in the corpus "
                     "report) and use the rest.")
        raise CorpusError("\n".join(lines))

    def settle(self, root: Path | str, report: CorpusReport, require_complete: bool) -> None:
        """Raise every problem (``require_complete``); else move the problems of names and layout into
        ``report.set_aside`` and raise only those of the audio itself (undecodable, NaN; silent clips as
        ``on_silent`` says), which no flag should hide."""
        if not require_complete:
            for kind in [k for k in self.items if not k.startswith(AUDIO_PROBLEMS)]:
                report.set_aside.extend({"problem": kind, "what": line} for line in self.items.pop(kind))
        self.raise_if_any(root)


class Defects:
    """A recipe's known release defects (:class:`~wav2emo.data.registry.KnownDefect`), applied as files are
    read; what was done lands in the corpus report."""

    def __init__(self, known: Sequence[KnownDefect] = ()) -> None:
        self.by_file = {d.file: d for d in known}
        self.applied: list[dict] = []

    def stem(self, path: Path) -> str:
        """The stem ``path`` should have had (a known misnamed file gets its true name)."""
        d = self.by_file.get(path.stem)
        if d is None or d.action != "rename":
            return path.stem
        self.applied.append({"file": str(path), "problem": d.problem, "action": f"read as {d.becomes}"})
        return d.becomes

    def read_by_folder(self, path: Path, becomes: str, folder: str) -> None:
        """Record a misnamed file read from its fields and its speaker folder (unambiguous, so not set aside)."""
        self.applied.append({"file": str(path), "problem": f"name breaks the naming scheme; its folder {folder}/ "
                             "and its fields say which clip it is", "action": f"read as {becomes}"})

    def identical_copies(self, paths: Sequence[Path], root: Path) -> None:
        self.applied.append(twice_in_the_copy(paths, root))

    def set_aside_files(self, paths: Sequence[Path], root: Path, problem: str) -> None:
        """Record files a documented rule of the release sets aside (``problem`` says which, and its source), as
        one report entry: ``file`` names the first and counts the rest, ``files`` lists them all."""
        if paths:
            self.applied.append(set_aside_entry(paths, root, problem))

    def set_aside_always(self, clip_id: str, path: Path) -> bool:
        d = self.by_file.get(clip_id)
        if d is None or d.action != "set_aside":
            return False
        self.applied.append({"file": str(path), "problem": d.problem, "action": "set aside"})
        return True

    def set_aside_if_silent(self, clip_id: str, path: Path, reason: str) -> bool:
        d = self.by_file.get(clip_id)
        if d is None or d.action != "set_aside_if_silent":
            return False
        self.applied.append({"file": str(path), "problem": d.problem, "action": f"set aside ({reason})"})
        return True


def identical_files(paths: Sequence[Path]) -> bool:
    """Whether every file of ``paths`` has the same bytes (sizes first, then SHA-1)."""
    if len({Path(p).stat().st_size for p in paths}) != 1:
        return False
    return len({sha1_of_file(p) for p in paths}) == 1


def set_aside_entry(paths: Sequence[Path], root: Path, problem: str) -> dict:
    """The report entry of files set aside by one documented rule of the release (one entry, not one per file:
    a rule such as RAVDESS's song part covers a thousand files)."""
    shown = sorted(str(Path(p).relative_to(root)) if Path(p).is_relative_to(root) else str(p) for p in paths)
    more = f" and {len(shown) - 1} more like it" if len(shown) > 1 else ""
    return {"file": shown[0] + more, "problem": problem, "action": "set aside", "files": shown}


def twice_in_the_copy(paths: Sequence[Path], root: Path) -> dict:
    """The report entry of a clip the copy holds more than once, byte-identical (one kept)."""
    shown = [str(Path(p).relative_to(root)) if Path(p).is_relative_to(root) else str(p) for p in paths]
    return {"file": ", ".join(shown[1:]), "problem": f"the same file {len(paths)} times in the copy, byte-identical "
            "(copies such as Kaggle's hold a corpus twice, in nested folders)", "action": f"one kept: {shown[0]}"}
