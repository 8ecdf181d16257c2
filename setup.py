"""Metadata lives in setup.cfg; this file only declares the compiled parts, which
setup.cfg cannot express: the UDP probe path (argoctl/_echo.c) and the path
estimator and score (argoctl/_pathcore.c)."""
from setuptools import Extension, setup

# -ffp-contract=off: no fused multiply-adds, so the C arithmetic rounds exactly
# as the Python it mirrors (tests/unit/test_pathcore.py compares them exactly).
FLAGS = ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter", "-Wno-missing-field-initializers",
         "-ffp-contract=off"]

setup(ext_modules=[
    # HMAC-SHA256 comes from OpenSSL's libcrypto (Debian: libssl-dev).
    Extension("argoctl._echo", ["argoctl/_echo.c"], depends=["argoctl/_pathcore.h"],
              libraries=["m", "crypto"], extra_compile_args=FLAGS),
    Extension("argoctl._pathcore", ["argoctl/_pathcore.c"], depends=["argoctl/_pathcore.h"],
              libraries=["m"], extra_compile_args=FLAGS),
])
