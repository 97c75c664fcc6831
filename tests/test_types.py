"""The type hints hold: mypy, as pyproject.toml configures it, finds no error in minicv/ and kernels/.

mypy is in the test extra: without it this test fails (No module named mypy) rather than skipping. Its
cache is the checkout's .mypy_cache: a first run takes about a minute, later ones seconds.
"""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parent.parent


def _sources() -> list[Path]:
    files = [p for folder in ("minicv", "kernels") for p in (ROOT / folder).rglob("*.py")]
    return [p for p in files if "__pycache__" not in p.parts]


def test_kernels_are_checked_through_the_link_under_their_installed_name():
    """tests/typecheck/minicv/kernels must stay a link to kernels/ (a copy would be checked instead of the code)."""
    link = ROOT / "tests" / "typecheck" / "minicv" / "kernels"
    assert link.is_symlink() and link.resolve() == (ROOT / "kernels").resolve()


def test_mypy_finds_no_error_in_minicv_and_kernels():
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"mypy found errors:\n{output}"
    # every file is checked: one left out of the configured packages would pass unseen
    assert f"no issues found in {len(_sources())} source files" in output, output
