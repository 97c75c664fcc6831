"""Compile every .cu of kernels/cuda to PTX with nvcc, no GPU needed: GPU-only mistakes fail fast in CI.

    python -m minicv.kernels.cuda.check_ptx [file.cu ...]

Each file is compiled as the cuda device would build it (local includes inlined, every kernel instantiated
for float and double) with ``nvcc -ptx -arch=sm_90 -std=c++17``; the PTX must define every kernel.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .launch import CUDA_OPTIONS, KERNEL_DIR, kernel_names, read_source

NVCC_FLAGS = ("-ptx", "-arch=sm_90", *CUDA_OPTIONS)


def cuda_sources() -> list[str]:
    return sorted(path.name for path in KERNEL_DIR.glob("*.cu"))


def compile_ptx(source_file: str) -> str:
    """The PTX of ``source_file`` with every kernel instantiated; raises RuntimeError with nvcc's message."""
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        raise RuntimeError("nvcc is not on PATH")
    source = read_source(source_file)
    names = kernel_names(source)
    # Taking each kernel's address instantiates its template, as cupy's name_expressions do.
    instances = ", ".join(f"(const void*)&{name}" for name in names)
    code = f"{source}\nconst void* const minicv_check_ptx_kernels[] = {{{instances}}};\n"
    with tempfile.TemporaryDirectory(prefix="check-ptx-") as work:
        cu, ptx = Path(work) / source_file, Path(work) / "out.ptx"
        cu.write_text(code, encoding="utf-8")
        result = subprocess.run([nvcc, *NVCC_FLAGS, str(cu), "-o", str(ptx)], capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"nvcc could not compile {source_file}:\n{result.stderr}")
        text = ptx.read_text(encoding="utf-8")
    missing = [name for name in names if name.split("<")[0] not in text]
    if missing:
        raise RuntimeError(f"{source_file}: no PTX for {missing}")
    return text


def main(argv: list[str]) -> int:
    failures = 0
    for source_file in argv or cuda_sources():
        try:
            compile_ptx(source_file)
            print(f"ok      {source_file}")
        except RuntimeError as error:
            failures += 1
            print(f"FAILED  {error}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
