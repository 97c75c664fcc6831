"""The errors minicv raises for bad input.

Each is the Python exception the design promises (ValueError, TypeError, IndexError) and also the one
PyTorch raises for the same input (mostly RuntimeError), so code written against either catches it.
Messages name the argument, the value and what was expected.
"""


class ArgumentError(ValueError, RuntimeError):
    """A bad shape, size or hyper-parameter."""


class DtypeError(TypeError, NotImplementedError):
    """A dtype the op does not support (integers, say), or operands of different dtypes.
    (NotImplementedError is a RuntimeError, as PyTorch raises for these.)"""


class OutOfRangeError(IndexError, RuntimeError):
    """An index or a class label outside the range it indexes."""


class UnsupportedError(ArgumentError, NotImplementedError):
    """A mode or rank PyTorch has and minicv does not (PyTorch raises NotImplementedError for some)."""


class TrainingDiverged(FloatingPointError, RuntimeError):
    """Training produced a non-finite loss or weight; ``epoch`` and ``step`` (1-based) say where,
    ``what`` says which values. (A FloatingPointError, as NumPy raises for floating-point faults.)"""

    def __init__(self, epoch: int, step: int, what: str):
        self.epoch, self.step, self.what = epoch, step, what
        super().__init__(f"training diverged at epoch {epoch}, step {step}: {what}")


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, is not minicv's, or does not fit the model (and optimizer,
    data loader, scheduler) it is loaded into; the message names the file and the entry or key."""


class DeviceUnavailableError(RuntimeError):
    """A device this machine cannot run: its library (CuPy) or its hardware (a GPU) is missing."""
