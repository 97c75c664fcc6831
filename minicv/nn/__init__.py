"""Layers and models as PyTorch builds them: ``import minicv.nn as nn``."""

from minicv.nn import init
from minicv.nn.layers import (
    BatchNorm2d,
    BatchNormReLU2d,
    Conv2d,
    ConvTranspose2d,
    Flatten,
    Linear,
    MaxPool2d,
    MaxUnpool2d,
    ReLU,
    Sequential,
    Upsample,
)
from minicv.nn.module import Module, Parameter

__all__ = [
    "BatchNorm2d",
    "BatchNormReLU2d",
    "Conv2d",
    "ConvTranspose2d",
    "Flatten",
    "Linear",
    "MaxPool2d",
    "MaxUnpool2d",
    "Module",
    "Parameter",
    "ReLU",
    "Sequential",
    "Upsample",
    "init",
]
