"""Stopping a run cleanly on SIGTERM or Ctrl-C, at a step all processes agree on.

A checkpoint save is collective, so with several processes every one of them
must stop after the same step, even when the signal reaches only one (a
preempted host) or reaches them at different moments.

- One process: a Python handler for SIGTERM and SIGINT records the request;
  the loop finishes the step, saves and exits.
- Several processes: SIGTERM is left to JAX's preemption notifier, which
  `jax.distributed.initialize` installs (a Python handler would replace it).
  The notice travels through the coordination service, and every process
  stops at the step where `reached_preemption_sync_point` says yes: the
  next step after the furthest any process had reached. Ctrl-C is forwarded
  to this process as SIGTERM so it takes the same path.

A second Ctrl-C (or, with one process, a second SIGTERM) exits at once.

A wall-clock budget (`deadline`) stops the run the same way. Clocks of
several processes disagree, so there process 0's clock decides, broadcast to
all every `sync_every` steps (a collective: rare enough to cost nothing).
"""

import os
import signal
import time

import numpy as np
from jax.experimental import multihost_utils


class StopRequest:
  """Signal handling for the training loop (a context manager).

  Usage:
    with StopRequest(multiprocess=jax.process_count() > 1) as stop:
      while ...:
        ...one step...
        if stop.reached(step): ...save and break...
  """

  def __init__(self, multiprocess: bool, deadline: float | None = None,
               sync_every: int = 1):
    """Args: multiprocess: several JAX processes run the loop; deadline:
    time.monotonic() value after which the run stops (None = no budget);
    sync_every: with several processes, the deadline is checked at steps
    that are multiples of this."""
    self.multiprocess = multiprocess
    self.deadline = deadline
    self.sync_every = sync_every
    self.requested = False  # A signal arrived at this process.
    self.out_of_time = False  # The deadline passed (agreed by all).
    self._previous = {}

  def __enter__(self):
    signals = (signal.SIGINT,) if self.multiprocess else (signal.SIGTERM,
                                                          signal.SIGINT)
    for sig in signals:
      try:
        self._previous[sig] = signal.signal(sig, self._handle)
      except ValueError:  # Not the main thread: leave signals alone.
        pass
    return self

  def __exit__(self, *exc):
    for sig, handler in self._previous.items():
      signal.signal(sig, handler)

  def reached(self, step: int) -> bool:
    """Whether to stop after `step`; every process must call it every step.

    With several processes the answer is the same on all of them.
    """
    if self.multiprocess:
      signalled = multihost_utils.reached_preemption_sync_point(step)
    else:
      signalled = self.requested
    return signalled or self._deadline_passed(step)

  def _deadline_passed(self, step: int) -> bool:
    if self.deadline is None:
      return False
    if not self.multiprocess:
      passed = time.monotonic() >= self.deadline
    elif step % self.sync_every == 0:
      passed = bool(multihost_utils.broadcast_one_to_all(
          np.asarray(time.monotonic() >= self.deadline)))
    else:
      return False
    self.out_of_time = self.out_of_time or passed
    return passed

  def _handle(self, signum, frame):
    del frame
    if self.requested:
      print(f'Second signal {signum}: exiting now without saving.', flush=True)
      os._exit(128 + signum)
    self.requested = True
    print(f'Signal {signum}: finishing the step that all processes agree on, '
          'saving a checkpoint and exiting (send it again to exit at once).',
          flush=True)
    if self.multiprocess:
      os.kill(os.getpid(), signal.SIGTERM)  # To JAX's preemption notifier.
