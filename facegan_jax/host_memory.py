"""Keeps freed host memory in the process, so XLA:CPU steps stop page-faulting.

Each execution of a compiled XLA:CPU program allocates its temporaries as one
buffer and frees it at the end (108 MB for the `celeba64_cpu.py` step). glibc
serves an allocation that large with a fresh `mmap` and returns it with
`munmap`, and allocations from XLA's worker threads come from per-thread
arenas that give memory back the same way; so every step faults its
temporaries in again, page by page, the kernel zeroing each one (27,700
minor faults and a third of a core in the kernel per `celeba64_cpu.py`
step). With one arena, no `mmap` for allocations and no trimming, the
buffer freed by one step is reused by the next: measured on the 2-core
development CPU, `celeba64_cpu.py` 116 -> 97 ms per step, `celeba32_cpu.py`
37 -> 32 ms (with float32 matmuls 55 -> 47 ms).

The price is that memory freed once is kept for the process's life (the
resident set stays at its peak), which a training process that reaches the
same peak every step pays anyway.
"""

import ctypes
import ctypes.util
import sys

from absl import logging

# glibc's mallopt parameters (<malloc.h>).
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_M_ARENA_MAX = -8

_SETTINGS = (
    (_M_ARENA_MAX, 1),  # Worker threads allocate from the main heap too,
    (_M_MMAP_MAX, 0),  # which serves large allocations as well,
    (_M_TRIM_THRESHOLD, 2**31 - 1),  # and keeps what is freed.
)


def retain_freed_memory() -> bool:
  """Tunes glibc's malloc as above; True where it applied (Linux, glibc).

  Call it first thing in a process, before the threads that allocate start
  (an arena a thread already has stays its own). Elsewhere (macOS, musl) it
  does nothing and returns False.
  """
  if not sys.platform.startswith('linux'):
    return False
  try:
    libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
    mallopt = libc.mallopt
  except (OSError, AttributeError):
    return False
  mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
  applied = all(mallopt(option, value) == 1 for option, value in _SETTINGS)
  if not applied:
    logging.warning('glibc mallopt refused a setting: freed host memory may '
                    'be returned to the system and faulted in again.')
  return applied
