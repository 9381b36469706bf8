"""Builds the C storage agent as part of ``pip install .`` / ``pip install -e .``.

The agent is a standalone program, not a Python extension, so this hooks ``build_ext`` (which setuptools runs
for regular and editable installs alike once the distribution says it has native code) and calls ``make`` in
``native/``, placing the binary inside the package as ``trio_sos/_bin/trio-sos-agent``.
"""

import os
import subprocess
import sys

from setuptools import Distribution, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


class BinaryDistribution(Distribution):
    def has_ext_modules(self) -> bool:  # the wheel holds a native binary: never a pure-Python wheel
        return True


class BuildAgent(build_ext):
    def run(self) -> None:
        if self.inplace or getattr(self, "editable_mode", False):
            target_dir = os.path.join(HERE, "trio_sos", "_bin")
        else:
            target_dir = os.path.join(os.path.abspath(self.build_lib), "trio_sos", "_bin")
        os.makedirs(target_dir, exist_ok=True)
        out = os.path.join(target_dir, "trio-sos-agent")
        cmd = ["make", "-C", os.path.join(HERE, "native"), f"OUT={out}"]
        try:
            subprocess.run(cmd, check=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            sys.exit(
                f"building the storage agent failed ({exc}); it needs make, a C compiler and isa-l "
                "(Debian: apt-get install build-essential libisal-dev)"
            )

    def get_outputs(self) -> list[str]:
        return []


setup(distclass=BinaryDistribution, cmdclass={"build_ext": BuildAgent})
