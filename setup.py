"""The compiled meter only (``capture/_cicflow.c``, issue 16); everything else is declared in pyproject.toml.

Here rather than in pyproject.toml's ``[tool.setuptools.ext-modules]``, which setuptools still calls experimental
(with a warning at every build). Optional: without a C compiler and Python's headers the install still works and
the sensor runs the pure-Python definition (capture/cicflow.py, slower); the parity tests bind the two, and CI
requires the compiled one (tests/unit/test_cicflow_compiled.py).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("tapwatch.capture._cicflow", ["capture/_cicflow.c"], optional=True)])
