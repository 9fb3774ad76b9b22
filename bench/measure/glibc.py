"""glibc's allocator on the CPU: `release` (freed blocks of 128 KiB and up go back to the OS, so the
peak RSS follows the live tensors) and, after a memory pass, the settled state of glibc's defaults
(freed blocks kept on the heap). mallopt and malloc_trim through ctypes; Linux with glibc only."""
from __future__ import annotations

from typing import Any

from bench.errors import UnsupportedError

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter
RELEASE_THRESHOLD_BYTES = 128 * 1024  # glibc's initial threshold, kept fixed
RELEASE_NOTE = ("cpu_allocator = 'release': glibc's mmap threshold fixed at 128 KiB (mallopt M_MMAP_THRESHOLD), "
                "so freed blocks go back to the OS and the RSS peak follows the live tensors; steps run slower "
                "than under glibc's defaults")


def release_freed_blocks() -> None:
    """Fix glibc's mmap threshold at 128 KiB, as MALLOC_MMAP_THRESHOLD_=131072 would: every block of
    that size and up is mapped on its own and unmapped when freed. By default glibc raises the
    threshold to the largest block freed so far, after which freed tensors stay on the heap and in the
    resident set: on the CPU a peak RSS then holds 30-70% more than the tensors alive at the peak."""
    try:
        ok = _libc().mallopt(M_MMAP_THRESHOLD, RELEASE_THRESHOLD_BYTES) == 1
    except (OSError, AttributeError):
        ok = False
    if not ok:
        raise UnsupportedError("cpu_allocator = 'release' needs glibc's mallopt (Linux with glibc); "
                               "this C library has none, or refused it")


def _libc() -> Any:
    import ctypes
    import ctypes.util

    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")


M_TRIM_THRESHOLD = -1
KEEP_THRESHOLD_BYTES = 32 * 2**20  # the ceiling glibc's dynamic mmap threshold rises to (64-bit)
KEEP_NOTE = ("the timed steps ran after a memory pass: glibc's mmap threshold fixed at 32 MiB and its trim "
             "threshold at 64 MiB, where its defaults settle once a block that large was freed (mallopt turns "
             "the dynamic threshold off for good, so the defaults cannot come back in this process)")


def trim_heap() -> None:
    """Give the heap's free pages back to the OS (glibc's malloc_trim(0)), where there is glibc."""
    try:
        _libc().malloc_trim(0)
    except (OSError, AttributeError):
        pass


def keep_freed_blocks() -> None:
    """After `release_freed_blocks`, the steady state of glibc's defaults, as far as mallopt can: by
    default the mmap threshold rises to the largest block freed, up to 32 MiB, and the trim threshold
    to twice that, so freed blocks stay on the heap for the next step. Fixed at those ceilings here."""
    libc = _libc()
    libc.mallopt(M_MMAP_THRESHOLD, KEEP_THRESHOLD_BYTES)
    libc.mallopt(M_TRIM_THRESHOLD, 2 * KEEP_THRESHOLD_BYTES)
    libc.malloc_trim(0)  # the pass's freed blocks go back: the timed steps start from the live tensors
