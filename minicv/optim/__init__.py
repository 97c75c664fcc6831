"""Optimizers with PyTorch's exact update rules: ``import minicv.optim as optim``."""

from minicv.optim.adam import Adam
from minicv.optim.lr_scheduler import CosineAnnealingLR
from minicv.optim.optimizer import Optimizer
from minicv.optim.sgd import SGD

__all__ = ["SGD", "Adam", "CosineAnnealingLR", "Optimizer"]
