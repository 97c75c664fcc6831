"""``minicv bench`` (and ``python -m benchmarks``): time every op of the lecture on every device present,
against PyTorch in the same run.

Each op runs forward and forward+backward, at the issue's sizes and over a sweep of sizes, through two
paths per minicv device: ``op`` (minicv.functional, what a user calls: validation, Tensors, autograd) and
``kernels`` (the device's kernel functions called directly on raw arrays, once per conv algorithm), so
kernel speed and engine overhead are both visible. PyTorch (CPU, and CUDA where a GPU is present) runs
the same problems. Every timing excludes JIT compilation (warm-up calls first) and reports the median
and the quartiles over repeats; convolutions report GFLOP/s (2 * the direct sum's MACs, whatever the
algorithm: Winograd does fewer, so its rate can pass the FMA peak), memory-bound ops GB/s (each
input read once, each output written once) and the share of the device's copy bandwidth; every row
reports ``vs torch`` = torch time / minicv time (> 1: faster than PyTorch). Results go to
``<out>/<machine>.json``, ``.md`` (the table, each target marked met or missed; a ``--quick`` run's tiny
sizes judge no target) and ``.png`` (time against problem size, log-log).

The package, one idea per module: ``problems`` (one class per op, and ``RegistryProblem`` for any other
op of the registry, minicv/ops.py), ``cases`` (the sizes and their targets), ``backends`` (where a
problem runs), ``steps`` (one run as a callable), ``timing`` (the timing loop and its statistics),
``jobs`` (a case on a backend through one path: a row), ``machine`` (the CPU, GPU, copy bandwidth and
allocator), ``judge`` (ratios and targets), ``report`` (the markdown), ``plot``, ``train_step`` and
``twin`` (a training step against its PyTorch twin), ``breakdown`` (where a step's time goes), ``isa``
(the AVX2 and cold-start child processes), ``options`` (the command line's options, cheap to import) and
``run`` (all of it, in order). Nothing in the engine imports this package: ``import minicv`` and
``minicv.cli`` leave it unloaded until ``minicv bench`` runs.
"""
