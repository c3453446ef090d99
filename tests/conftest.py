"""Test session set-up.

A persistent XLA compilation cache, shared with the subprocesses tests start:
many tests compile the same tiny programs, and on a 2-core machine
compilation dominates the suite's time. Set before JAX is imported.
"""

import os
import tempfile

os.environ.setdefault(
    'JAX_COMPILATION_CACHE_DIR',
    os.path.join(tempfile.gettempdir(), 'facegan_jax_test_xla_cache'))
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '0')
os.environ.setdefault('JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES', '0')
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
# FID's 2048x2048 eigendecomposition thrashes with threads on 2 busy cores.
os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')
