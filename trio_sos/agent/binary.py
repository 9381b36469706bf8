"""Where the C agent program is: an explicit override, the installed package, or a development checkout."""

from __future__ import annotations

import os
from pathlib import Path

NAME = "trio-sos-agent"
_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def agent_binary() -> Path:
    override = os.environ.get("TRIO_SOS_AGENT_BIN")
    if override:
        path = Path(override)
        if not os.access(path, os.X_OK):
            raise FileNotFoundError(f"TRIO_SOS_AGENT_BIN={override} is not an executable file")
        return path
    candidates = [_PACKAGE_DIR / "_bin" / NAME, _PACKAGE_DIR.parent / "native" / "build" / NAME]
    found = [path for path in candidates if os.access(path, os.X_OK)]
    if found:
        # In a development checkout both may exist: the newest build is the one the developer means.
        return max(found, key=lambda path: path.stat().st_mtime)
    raise FileNotFoundError(
        f"the storage agent program {NAME} was not found (looked in {', '.join(map(str, candidates))}); "
        "install the project with `pip install .` (or `pip install -e .`), which builds it, or run `make -C native`"
    )
