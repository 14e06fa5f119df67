"""cffi builder for umvu._core (API mode: calls release the GIL).

core.h is the whole interface (cdef); each C file holds one concern of the
core (see core.h)."""
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = ["wait.c", "fastpath.c", "window.c", "tracee.c", "spawn.c"]

ffibuilder = FFI()
with open(os.path.join(HERE, "core.h")) as header:
    # cdef cannot take the #define expressions; keep only what cffi parses
    ffibuilder.cdef(header.read())
ffibuilder.set_source(
    "umvu._core",
    '#include "core.h"',
    sources=[os.path.join("csrc", name) for name in SOURCES],
    depends=[os.path.join("csrc", name) for name in ("core.h", "fastpath.h")],
    include_dirs=[HERE],
    extra_compile_args=["-O2", "-Wall"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
