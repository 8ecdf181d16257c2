"""Metadata lives in setup.cfg; this file only declares the compiled probe path
(argoctl/_echo.c), which setup.cfg cannot express."""
from setuptools import Extension, setup

setup(ext_modules=[Extension("argoctl._echo", ["argoctl/_echo.c"], libraries=["m"],
                             extra_compile_args=["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter",
                                                 "-Wno-missing-field-initializers"])])
