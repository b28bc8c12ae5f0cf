"""The process heap of a run: glibc malloc's large-allocation threshold, and freed memory given back.

glibc serves an allocation of at least M_MMAP_THRESHOLD bytes with a mapping of its own, which
the OS gets back the moment it is freed; smaller ones come from the heap, whose freed pages stay
mapped. The threshold starts at 128 KiB but glibc raises it to the size of each mapped block
freed, up to 32 MiB: once the data loader has freed its 32 MiB blocks, nearly every large
allocation of the run (XLA's buffers for an epoch or an evaluation chunk, NumPy temporaries)
comes from the heap, and the heap keeps its high-water mark for good. `configure` fixes the
threshold at MMAP_THRESHOLD, which also stops that adjustment. XLA's compiler (LLVM) frees ~60-100
MiB of small blocks after compiling a program; `give_back` returns the whole free pages among
them (malloc_trim). Neither changes a value the run computes.

Both do nothing where the C library is not glibc, and under DSL_MALLOC=0.
"""

from __future__ import annotations

import os

MMAP_THRESHOLD = 4 << 20    # bytes: allocations of this size and above are mappings of their own
M_MMAP_THRESHOLD = -3       # glibc's mallopt parameter number

_libc = None
_configured = False


def _glibc():
    global _libc
    if _libc is None:
        _libc = False
        if os.environ.get("DSL_MALLOC", "1") != "0":
            try:
                if (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
                    import ctypes

                    lib = ctypes.CDLL("libc.so.6")
                    if hasattr(lib, "mallopt") and hasattr(lib, "malloc_trim"):
                        _libc = lib
            except (OSError, AttributeError, ValueError):
                pass
    return _libc or None


def configure() -> bool:
    """Fixes glibc's mmap threshold at MMAP_THRESHOLD (once per process). True when set."""
    global _configured
    lib = _glibc()
    if lib is None:
        return False
    if not _configured:
        _configured = bool(lib.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    return _configured


def give_back() -> None:
    """Returns the heap's free pages to the OS (glibc's malloc_trim; a few ms)."""
    lib = _glibc()
    if lib is not None:
        lib.malloc_trim(0)


def arrow_give_back() -> None:
    """Returns the pages pyarrow's memory pool (mimalloc) keeps after freeing them: after
    `read_csv`, about the table's size again (1,000,000 x 51 numbers: 541 MiB held, 1,146 MiB
    resident)."""
    import pyarrow as pa

    pa.default_memory_pool().release_unused()
