"""cffi builder for umvu._core (API mode: calls release the GIL)."""
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))

ffibuilder = FFI()
with open(os.path.join(HERE, "core.h")) as header:
    # cdef cannot take the #define expressions; keep only what cffi parses
    ffibuilder.cdef(header.read())
ffibuilder.set_source(
    "umvu._core",
    '#include "core.h"',
    sources=[os.path.join("csrc", "core.c"), os.path.join("csrc", "fastpath.c")],
    include_dirs=[HERE],
    extra_compile_args=["-O2", "-Wall"],
)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
