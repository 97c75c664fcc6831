"""minicv's packages: pyproject.toml holds the rest (metadata, dependencies, extras, package data).

What only this file can say: the top-level ``kernels/`` folder is installed as ``minicv.kernels`` (a kernel
never imports the engine), with its subpackages found rather than listed, so a new folder of kernels
needs no entry here; pyproject's ``packages.find`` cannot rename what it finds.
"""

from setuptools import find_packages, setup

KERNELS = [f"minicv.{name}" for name in find_packages(include=["kernels", "kernels.*"])]

setup(
    packages=find_packages(include=["minicv", "minicv.*"]) + KERNELS,
    package_dir={"minicv": "minicv", "minicv.kernels": "kernels"},
)
