"""Each output size is worked out once, by the engine's shape helpers: every device's kernels size their
results by what they are handed (kernels/__init__.py), and no kernel carries a formula of its own."""

import ast
import contextlib
import io
import re
import tokenize
from pathlib import Path

import minicv.kernels
import minicv.kernels.numba as nb
import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from minicv.kernels.numba import conv as nb_conv

import minicv
from minicv.devices import get_device

# (device, numba conv algorithm): every algorithm of the numba device has its own loops
KERNEL_DEVICES = [("numpy", None), *(("numba", a) for a in nb_conv.ALGORITHMS), ("cudasim", None)]
# x (N, C_in, H, W), w (C_out, C_in/groups, kH, kW), stride, padding, dilation, groups, and the size
# conv_output_hw gives
LAYERS = {
    "strided dilated grouped": ((2, 4, 7, 9), (6, 2, 3, 2), (2, 1), (1, 0), (1, 2), 2, (4, 7)),
    "3x3 stride 1 (Winograd's)": ((1, 3, 6, 5), (4, 3, 3, 3), (1, 1), (1, 1), (1, 1), 1, (6, 5)),
    # 36 taps a group: on AVX2, numba's direct forward puts output channels along the lanes
    "strided, many taps": ((2, 8, 9, 11), (6, 4, 3, 3), (2, 2), (1, 2), (1, 1), 2, (5, 7)),
}


def _algorithm(algorithm: str | None):
    return nb.conv_algorithm(algorithm) if algorithm else contextlib.nullcontext()


@pytest.mark.parametrize("device, algorithm", KERNEL_DEVICES)
@pytest.mark.parametrize("layer", list(LAYERS))
@pytest.mark.parametrize("change", [(-2, -3), (0, 0), (2, 1)], ids=["smaller", "natural", "larger"])
def test_conv2d_forward_honours_the_out_hw_it_is_handed(device, algorithm, layer, change):
    """The result has exactly the handed size: its first rows/columns are conv2d's, and those past the
    natural size read zeros past the padded input (taps beyond the input read 0, as the contract says).
    The engine hands smaller sizes (conv_transpose2d's input gradient); no size makes a kernel leave x."""
    x_shape, w_shape, stride, padding, dilation, groups, natural = LAYERS[layer]
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    out_hw = (natural[0] + change[0], natural[1] + change[1])
    # oracle: PyTorch's conv2d of x with enough zero rows/columns at its end, cropped to out_hw
    x_end = torch.nn.functional.pad(torch.from_numpy(x), (0, 2 * stride[1] * 3, 0, 2 * stride[0] * 3))
    expected = TF.conv2d(x_end, torch.from_numpy(w), stride=stride, padding=padding, dilation=dilation,
                         groups=groups)[:, :, :out_hw[0], :out_hw[1]].numpy()
    kernels = get_device(device).kernels
    with _algorithm(algorithm):
        y = kernels.conv2d_forward(x, w, out_hw, stride, padding, dilation, groups)
    assert y.shape == (x_shape[0], w_shape[0], *out_hw)
    np.testing.assert_allclose(y, expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("device", ["numpy", "numba", "cudasim"])
def test_max_pool2d_forward_honours_the_out_hw_it_is_handed(device):
    """A 2x2 pool of a 6x6 plane handed (2, 3) windows: the first ones, not the 3x3 floor gives."""
    x = np.random.default_rng(2).permutation(72).reshape(1, 2, 6, 6).astype(np.float64)
    y, indices = get_device(device).kernels.max_pool2d_forward(x, (2, 2), (2, 2), (0, 0), (1, 1), (2, 3))
    expected, expected_indices = TF.max_pool2d(torch.from_numpy(x), 2, return_indices=True)
    np.testing.assert_array_equal(y, expected[:, :, :2, :3].numpy())
    np.testing.assert_array_equal(indices, expected_indices[:, :, :2, :3].numpy())


# --------------------------------------------------------------------------- one formula each
# The output-size formulas, on code with its strings and comments removed:
#   floor sizes (conv2d, max_pool2d): ... d * (k - 1) - 1 ...) // s + 1
#   transposed sizes (conv_transpose2d, max_unpool2d's default): (size - 1) * s - 2 * p ... or
#   (size - 1) * s + k - 2 * p
FORMULAS = {
    "floor": re.compile(r"\*\s*\(\s*\w+\s*-\s*1\s*\)\s*-\s*1\b.*//\s*[\w.\[\]]+\s*\+\s*1\b"),
    "transposed": re.compile(r"\(\s*[\w.\[\]]+\s*-\s*1\s*\)\s*\*\s*[\w.\[\]]+\s*[-+]\s*([\w.\[\]]+\s*-\s*)?2\s*\*"),
}
PACKAGES = (Path(minicv.__file__).parent, Path(minicv.kernels.__file__).parent)


def _code_lines(source: str) -> dict[int, str]:
    """Each line of ``source`` with its strings and comments blanked (a docstring may quote a formula)."""
    lines = source.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in (tokenize.STRING, tokenize.COMMENT):
            (first, start), (last, end) = token.start, token.end
            for number in range(first, last + 1):
                line = lines[number - 1]
                lo, hi = (start if number == first else 0), (end if number == last else len(line))
                lines[number - 1] = line[:lo] + " " * (hi - lo) + line[hi:]
    return dict(enumerate(lines, start=1))


def _enclosing_function(tree: ast.AST, line: int) -> str:
    names = [node.name for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
             and node.lineno <= line <= node.end_lineno]
    return names[-1] if names else "<module>"


def formula_sites(packages=PACKAGES) -> dict[str, list[tuple[str, str]]]:
    """formula -> the (file, function) of every line computing it, over the .py files of ``packages``."""
    sites: dict[str, list[tuple[str, str]]] = {name: [] for name in FORMULAS}
    for package in packages:
        for path in sorted(package.rglob("*.py")):
            source = path.read_text()
            tree = ast.parse(source)
            for number, code in _code_lines(source).items():
                for name, pattern in FORMULAS.items():
                    if pattern.search(code):
                        sites[name].append((f"{package.name}/{path.relative_to(package)}",
                                            _enclosing_function(tree, number)))
    return sites


def test_each_output_size_is_computed_once_in_the_engines_shape_helpers():
    assert formula_sites() == {
        "floor": [("minicv/functional/conv.py", "conv_output_hw"), ("minicv/functional/pooling.py", "pooled_size")],
        "transposed": [("minicv/functional/conv.py", "conv_transpose_output_hw"),
                       ("minicv/functional/pooling.py", "unpool_output_size")],
    }


def test_the_scan_finds_the_formulas_as_a_kernel_would_write_them(tmp_path):
    """The patterns are alive: a kernel re-deriving a size, in any of the usual spellings, is caught."""
    package = tmp_path / "kernels"
    package.mkdir()
    (package / "conv.py").write_text(
        '"""(size + 2p - d(k-1) - 1) // s + 1 in a docstring is no computation."""\n'
        "def conv2d_forward(x, w, stride, padding, dilation, groups):\n"
        "    out_hw = tuple((size + 2 * p - d * (k - 1) - 1) // s + 1\n"
        "                   for size, k, s, p, d in zip(x.shape[2:], w.shape[2:], stride, padding, dilation))\n"
        "def _output_size(size, kernel, stride, padding, dilation):\n"
        "    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1  # numba's\n"
        "def transposed(size, k, s, p, d, op):\n"
        "    return (size - 1) * s - 2 * p + d * (k - 1) + op + 1\n"
        "def unpooled(in_hw, stride, kernel, padding):\n"
        "    return [(in_hw[d] - 1) * stride[d] + kernel[d] - 2 * padding[d] for d in range(2)]\n"
    )
    assert formula_sites((package,)) == {
        "floor": [("kernels/conv.py", "conv2d_forward"), ("kernels/conv.py", "_output_size")],
        "transposed": [("kernels/conv.py", "transposed"), ("kernels/conv.py", "unpooled")],
    }
