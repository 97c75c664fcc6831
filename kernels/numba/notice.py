"""A word on stderr while the kernels compile on their first run: a cold cache takes a minute or more,
which without a word looks like a hang.

Numba fires its "numba:compile" event only where a function's on-disk cache (``cache=True``) holds no
entry for the types and the CPU at hand, so a warm cache stays silent. Importing this module registers
the listener, once per process.
"""

import sys

from numba.core import event

COMPILE_NOTICE = "minicv: compiling the numba kernels for this CPU (first run only, cached afterwards)..."
PACKAGE = __name__.rpartition(".")[0]


class CompileNotice(event.Listener):
    """Prints COMPILE_NOTICE on stderr the first time a kernel of this package starts compiling."""

    def __init__(self) -> None:
        self.told = False

    def on_start(self, ev: event.Event) -> None:
        module = getattr(ev.data["dispatcher"].py_func, "__module__", None) or ""
        if not self.told and module.startswith(PACKAGE + "."):
            self.told = True
            print(COMPILE_NOTICE, file=sys.stderr, flush=True)

    def on_end(self, ev: event.Event) -> None:
        pass


event.register("numba:compile", CompileNotice())
