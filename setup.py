"""minicv: a from-scratch engine for convolutional vision on hand-written kernels.

The top-level ``kernels/`` folder is installed as ``minicv.kernels``: kernels never import the engine.
"""

from setuptools import setup

TORCH_ORACLE = "torch==2.13.0"  # CPU build; the test oracle and benchmark baseline, never imported by minicv

setup(
    name="minicv",
    version="0.1.0",
    description="Convolutional vision layers on hand-written NumPy, Numba and CUDA kernels, with autograd",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=[
        "minicv",
        "minicv.functional",
        "minicv.nn",
        "minicv.optim",
        "minicv.models",
        "minicv.data",
        "minicv.exercises",
        "minicv.kernels",
        "minicv.kernels.numpy",
        "minicv.kernels.numba",
        "minicv.kernels.cuda",
        "minicv.kernels.cudasim",
    ],
    package_dir={"minicv": "minicv", "minicv.kernels": "kernels"},
    package_data={"minicv.kernels.cuda": ["*.cu", "*.cuh"], "minicv.kernels.cudasim": ["*.h", "*.cpp"]},
    install_requires=["numpy>=1.24", "numba>=0.59", "tqdm", "matplotlib", "pillow"],
    extras_require={
        "cuda": ["cupy-cuda12x"],
        "test": ["pytest", "hypothesis", TORCH_ORACLE, "expecttest", "nbclient", "nbformat", "ipykernel"],
        "notebooks": ["jupyter", "nbclient", "nbformat", "ipykernel"],
        # nvidia-cuda-nvrtc-cu12: NVRTC (~200 MB) compiles the kernels as cupy.RawModule does, no GPU needed
        "dev": ["ruff", "pytest", "hypothesis", TORCH_ORACLE, "expecttest", "nbclient", "nbformat", "ipykernel",
                "nvidia-cuda-nvrtc-cu12"],
    },
    entry_points={"console_scripts": ["minicv = minicv.cli:main"]},
)
