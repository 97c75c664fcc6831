"""Compile every .cu of kernels/cuda to PTX without a GPU, so GPU-only mistakes fail fast in CI.

    python -m minicv.kernels.cuda.check_ptx [file.cu ...]

Each file is compiled as the cuda device would build it (local includes inlined, every kernel instantiated
for float and double) with ``nvcc -ptx -arch=sm_90 -std=c++17``; the PTX must define every kernel. Where
NVRTC is found (a CUDA toolkit's libnvrtc, or the ``nvidia-cuda-nvrtc-cu12`` wheel), each file is also
compiled the way ``cupy.RawModule`` does on a GPU: NVRTC, the kernels named by name expressions. NVRTC
has no host headers and differs from nvcc in what it accepts, so this is the check that matters most
before a GPU session.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import glob
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from .launch import CUDA_OPTIONS, KERNEL_DIR, kernel_names, read_source

NVCC_FLAGS = ("-ptx", "-arch=sm_90", *CUDA_OPTIONS)
NVRTC_FLAGS = ("-arch=sm_90", *CUDA_OPTIONS)


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


def find_nvrtc() -> str | None:
    """The path of libnvrtc: the system's, else the one of the nvidia-cuda-nvrtc wheel; None if neither."""
    found = ctypes.util.find_library("nvrtc")
    if found:
        return found
    for directory in map(Path, sys.path):
        for library in sorted(glob.glob(str(directory / "nvidia" / "cuda_nvrtc" / "lib" / "libnvrtc.so.*"))):
            return library
    return None


def compile_nvrtc(source_file: str, library: str) -> str:
    """The PTX NVRTC makes of ``source_file``, every kernel requested by name expression as cupy.RawModule
    does; raises RuntimeError with NVRTC's log."""
    nvrtc = ctypes.CDLL(library)
    nvrtc.nvrtcGetErrorString.restype = ctypes.c_char_p
    source = read_source(source_file)
    names = [name.encode() for name in kernel_names(source)]
    program = ctypes.c_void_p()

    def call(what: str, status: int) -> None:
        if status == 0:
            return
        size = ctypes.c_size_t()
        nvrtc.nvrtcGetProgramLogSize(program, ctypes.byref(size))
        log = ctypes.create_string_buffer(size.value)
        nvrtc.nvrtcGetProgramLog(program, log)
        error = nvrtc.nvrtcGetErrorString(status).decode()
        raise RuntimeError(f"NVRTC could not {what} {source_file}: {error}\n{log.value.decode(errors='replace')}")

    call("create a program of", nvrtc.nvrtcCreateProgram(ctypes.byref(program), source.encode(),
                                                         source_file.encode(), 0, None, None))
    try:
        for name in names:
            call("add a name expression to", nvrtc.nvrtcAddNameExpression(program, name))
        flags = [flag.encode() for flag in NVRTC_FLAGS]
        call("compile", nvrtc.nvrtcCompileProgram(program, len(flags), (ctypes.c_char_p * len(flags))(*flags)))
        for name in names:
            lowered = ctypes.c_char_p()
            call("find every kernel in", nvrtc.nvrtcGetLoweredName(program, name, ctypes.byref(lowered)))
        size = ctypes.c_size_t()
        call("size the PTX of", nvrtc.nvrtcGetPTXSize(program, ctypes.byref(size)))
        ptx = ctypes.create_string_buffer(size.value)
        call("write the PTX of", nvrtc.nvrtcGetPTX(program, ptx))
        return ptx.value.decode()
    finally:
        nvrtc.nvrtcDestroyProgram(ctypes.byref(program))


def main(argv: list[str]) -> int:
    nvrtc = find_nvrtc()
    compilers = [("nvcc", compile_ptx)] + ([("NVRTC", lambda f: compile_nvrtc(f, nvrtc))] if nvrtc else [])
    if nvrtc is None:
        print("NVRTC not found (pip install nvidia-cuda-nvrtc-cu12 to check what cupy.RawModule compiles)")
    failures = 0
    for source_file in argv or cuda_sources():
        for compiler, compile_file in compilers:
            try:
                compile_file(source_file)
                print(f"ok      {compiler:<6} {source_file}")
            except RuntimeError as error:
                failures += 1
                print(f"FAILED  {compiler:<6} {error}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
