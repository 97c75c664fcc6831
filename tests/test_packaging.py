"""Packaging: pyproject.toml is the one place of the version, the package data and the tools' settings."""

import fnmatch
import importlib.metadata
import sys
from pathlib import Path

import pytest

import minicv

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the TOML reader pytest itself needs there
    import tomli as tomllib

ROOT = Path(__file__).parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_the_version_is_written_once_in_the_package():
    assert "version" not in PYPROJECT["project"] and "version" in PYPROJECT["project"]["dynamic"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "minicv.__version__"}
    assert "version" not in (ROOT / "setup.py").read_text(encoding="utf-8")
    assert importlib.metadata.version("minicv") == minicv.__version__


def test_every_file_the_kernels_read_is_package_data():
    """A .cu, .cuh or .h file left out of the package data is missing from `pip install .` (not editable),
    where the CUDA devices and the CUDA exercises read them."""
    package_data = PYPROJECT["tool"]["setuptools"]["package-data"]
    for folder, package in [(ROOT / "minicv", "minicv"), (ROOT / "kernels", "minicv.kernels")]:
        for path in folder.rglob("*"):
            if path.is_dir() or path.suffix in (".py", ".pyc") or "__pycache__" in path.parts:
                continue
            owner = ".".join([package, *path.parent.relative_to(folder).parts])
            patterns = package_data.get(owner, [])
            assert any(fnmatch.fnmatch(path.name, p) for p in patterns), f"{path}: not in package-data[{owner!r}]"


def test_pytest_reads_its_settings_from_pyproject(pytestconfig: pytest.Config):
    assert pytestconfig.inipath == ROOT / "pyproject.toml"
    assert "error::RuntimeWarning:minicv" in pytestconfig.getini("filterwarnings")
    assert {line.split(":")[0] for line in pytestconfig.getini("markers")} >= {"gpu", "slow"}
