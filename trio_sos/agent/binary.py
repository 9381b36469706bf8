"""Where the C agent program is: an explicit override, the package's own copy, the installed distribution's copy,
or a development checkout's build.

The installed distribution is looked up apart from the package directory because ``python -m trio_sos`` run from
a source checkout imports the checkout's ``trio_sos`` (the working directory comes first on ``sys.path``), while
``pip install .`` put the compiled agent in site-packages: the checkout shadows the package that has the binary.
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

NAME = "trio-sos-agent"
_PACKAGE_DIR = Path(__file__).resolve().parent.parent


def _installed_copies() -> list[Path]:
    """The agent inside every installed ``trio_sos`` distribution on ``sys.path`` (site-packages; a checkout's
    ``trio_sos.egg-info``, left by a build, is one too, without a binary)."""
    return [Path(str(dist.locate_file(f"trio_sos/_bin/{NAME}"))).resolve()
            for dist in importlib.metadata.distributions(name="trio_sos")]


def candidates() -> list[Path]:
    found = [_PACKAGE_DIR / "_bin" / NAME]
    for installed in _installed_copies():
        if installed not in found:
            found.append(installed)
    found.append(_PACKAGE_DIR.parent / "native" / "build" / NAME)
    return found


def agent_binary() -> Path:
    override = os.environ.get("TRIO_SOS_AGENT_BIN")
    if override:
        path = Path(override)
        if not os.access(path, os.X_OK):
            raise FileNotFoundError(f"TRIO_SOS_AGENT_BIN={override} is not an executable file")
        return path
    paths = candidates()
    found = [path for path in paths if os.access(path, os.X_OK)]
    if found:
        # In a development checkout several may exist: the newest build is the one the developer means.
        return max(found, key=lambda path: path.stat().st_mtime)
    raise FileNotFoundError(
        f"the storage agent program {NAME} was not found (looked in {', '.join(map(str, paths))}); "
        "install the project with `pip install .` (or `pip install -e .`), which builds it, or run `make -C native`"
    )
