"""Print how the packages of this environment differ from a lock file (``name==version ; marker`` lines).

CI runs it in the unlocked environment, so when the newest allowed releases break wav2emo, the log names
the candidates with both versions.  Exit status 1 when anything differs.
"""

from __future__ import annotations

import re
import sys
from importlib import metadata

from packaging.markers import Marker
from packaging.utils import canonicalize_name


def locked_versions(path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw in open(path, encoding="utf-8"):
        line = raw.split("#", 1)[0].strip()
        m = re.match(r"^([A-Za-z0-9._-]+)==([^\s;]+)\s*(?:;\s*(.+))?$", line)
        if not m:
            continue
        name, version, marker = m.groups()
        if marker and not Marker(marker).evaluate():
            continue
        out[canonicalize_name(name)] = version
    return out


def main(path: str) -> int:
    locked = locked_versions(path)
    installed = {canonicalize_name(d.metadata["Name"]): d.version for d in metadata.distributions()}
    rows = []
    for name in sorted(set(locked) | set(installed)):
        want, have = locked.get(name), installed.get(name)
        if name == "wav2emo" or want == have or (want and have and have.split("+")[0] == want.split("+")[0]):
            continue
        if have is None:  # locked for an extra this environment did not ask for
            continue
        if name in ("pip", "setuptools", "wheel"):  # the venv's own bootstrap tools, not our resolution
            continue
        rows.append(f"  {name}: lock {want or '-'} -> installed {have or '-'}")
    print(f"differences from {path}: {len(rows)}")
    print("\n".join(rows))
    return 1 if rows else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "requirements/lock.txt"))
