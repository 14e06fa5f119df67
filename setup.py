"""The cffi extension (csrc/) and the package list are made here; the rest
is in pyproject.toml.

Packages are discovered, not listed: modules/ is installed as umvu.modules,
and every package below it (vufs, vufuse, vudev...) comes along, so a wheel
holds what an editable install sees.
"""
from setuptools import find_packages, setup

PACKAGES = find_packages(include=["umvu", "umvu.*"]) + ["umvu.modules"] + [
    "umvu.modules." + name for name in find_packages("modules")]

setup(packages=PACKAGES, package_dir={"umvu.modules": "modules"},
      cffi_modules=["csrc/build_core.py:ffibuilder"])
