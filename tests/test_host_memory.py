"""host_memory: freed memory is reused instead of faulted in again."""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# What an XLA:CPU execution does with its temporaries, on a worker thread:
# allocate one large buffer, write it, free it; minor page faults of the
# repeats after the first are printed.
_CHURN = r'''
import ctypes, resource, sys, threading
from facegan_jax import host_memory
if sys.argv[1] == 'retain':
  assert host_memory.retain_freed_memory()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
size, faults = 96 << 20, []

def churn():
  for repeat in range(4):
    if repeat == 1:
      faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
    buffer = libc.malloc(size)
    ctypes.memset(buffer, 1, size)
    libc.free(buffer)
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)

thread = threading.Thread(target=churn)
thread.start()
thread.join()
print(faults[1] - faults[0])
'''


def _faults_of_three_repeats(mode: str) -> int:
  result = subprocess.run([sys.executable, '-c', _CHURN, mode], cwd=ROOT,
                          capture_output=True, text=True, check=True,
                          timeout=120)
  return int(result.stdout.split()[-1])


def _huge_pages_always() -> bool:
  try:
    with open('/sys/kernel/mm/transparent_hugepage/enabled') as f:
      return '[always]' in f.read()
  except OSError:
    return False


@pytest.mark.skipif(not sys.platform.startswith('linux'),
                    reason='tunes glibc malloc')
@pytest.mark.skipif(_huge_pages_always(),
                    reason='faults counted in 4 KiB pages')
def test_freed_buffers_are_reused_not_faulted_in_again():
  pages = 3 * (96 << 20) // os.sysconf('SC_PAGE_SIZE')
  # The control: by default each repeat faults the whole buffer in again.
  assert _faults_of_three_repeats('default') > pages // 2
  assert _faults_of_three_repeats('retain') < pages // 50
