"""minicv: convolutional vision layers on hand-written kernels, with a small autograd."""
