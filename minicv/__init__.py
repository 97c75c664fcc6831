"""minicv: convolutional vision layers on hand-written kernels, with a small autograd.

    import minicv as mc
    import minicv.functional as F
"""

from minicv.autograd import Function, is_grad_enabled, no_grad, set_grad_enabled
from minicv.devices import (
    Device,
    available_devices,
    device_names,
    get_device,
    is_available,
    register_device,
    set_default_device,
)
from minicv.gradcheck import GradcheckError, gradcheck
from minicv.random import manual_seed
from minicv.tensor import Tensor, from_dlpack, from_numpy, ones, ones_like, tensor, zeros, zeros_like

__version__ = "0.1.0"

__all__ = [
    "Device",
    "Function",
    "GradcheckError",
    "Tensor",
    "available_devices",
    "device_names",
    "from_dlpack",
    "from_numpy",
    "get_device",
    "gradcheck",
    "is_available",
    "is_grad_enabled",
    "manual_seed",
    "no_grad",
    "ones",
    "ones_like",
    "register_device",
    "set_default_device",
    "set_grad_enabled",
    "tensor",
    "zeros",
    "zeros_like",
]
