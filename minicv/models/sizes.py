"""Which image sizes a model takes.

Every model has ``size_multiple``: 2 to the power of its pooling or stride-2 stages. An encoder-decoder
brings its feature maps back to the input's size only when both sides are multiples of it (a 20x20
image pools to 10, 5, 2 and unpools to 4, 8, 16); the localizer's linear layer is sized for it.
"""

from __future__ import annotations

from minicv import nn
from minicv.errors import ArgumentError


def takes_size(model: nn.Module, height: int, width: int) -> bool:
    """Whether ``model`` takes images of ``height`` x ``width`` pixels."""
    return height % model.size_multiple == 0 and width % model.size_multiple == 0


def check_image_size(model: nn.Module, height: int, width: int, source: str = "images") -> None:
    """Raise ArgumentError, naming ``source`` and the sizes that work, unless ``model`` takes images of
    ``height`` x ``width``."""
    if takes_size(model, height, width):
        return
    multiple = model.size_multiple

    def nearest(side: int) -> str:
        below, above = side // multiple * multiple, -(-side // multiple) * multiple
        return " or ".join(str(n) for n in sorted({below, above}) if n > 0)

    raise ArgumentError(
        f"{source}: {type(model).__name__} takes heights and widths that are multiples of {multiple} (it halves "
        f"them {multiple.bit_length() - 1} times), got {width}x{height} (WxH); nearest that work: width "
        f"{nearest(width)}, height {nearest(height)}"
    )
