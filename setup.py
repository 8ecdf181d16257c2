"""Metadata lives in setup.cfg; this file only declares the compiled parts, which
setup.cfg cannot express: the UDP probe path (argoctl/_echo.c) and the path
estimator and score (argoctl/_pathcore.c)."""
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

NEEDS = "gcc, python3-dev and libssl-dev (scripts/setup-host.sh installs them)"


class OptionalBuildExt(build_ext):
    """The compiled parts are optional: argoctl runs without them (the same
    decisions in Python, at more CPU), so a host without a compiler or OpenSSL's
    headers still installs, and says what it lacks."""

    def run(self):
        try:
            super().run()
        except Exception as e:     # no compiler at all
            self._warn("the compiled parts", e)

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as e:
            self._warn(ext.name, e)

    @staticmethod
    def _warn(what, e):
        print(f"\nargoctl: WARNING: {what} could not be built ({e}).\n"
              f"argoctl works without it, in Python and at more CPU; to build it install "
              f"{NEEDS} and reinstall. `argoctl --version` says what is built.\n",
              file=sys.stderr)


# -ffp-contract=off: no fused multiply-adds, so the C arithmetic rounds exactly
# as the Python it mirrors (tests/unit/test_pathcore.py compares them exactly).
FLAGS = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers",
         "-ffp-contract=off"]

setup(cmdclass={"build_ext": OptionalBuildExt}, ext_modules=[
    # HMAC-SHA256 comes from OpenSSL's libcrypto (Debian: libssl-dev).
    Extension("argoctl._echo", ["argoctl/_echo.c"], depends=["argoctl/_pathcore.h"],
              libraries=["m", "crypto"], extra_compile_args=FLAGS),
    Extension("argoctl._pathcore", ["argoctl/_pathcore.c"], depends=["argoctl/_pathcore.h"],
              libraries=["m"], extra_compile_args=FLAGS),
])
