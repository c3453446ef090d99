"""Joining a multi-process run (TPU pods, GPU clusters, localhost trials).

Defines the command-line flags main.py and the evaluate tool share
(--multihost, --coordinator_address, --num_processes, --process_id and the
timeouts); `join_if_asked()` acts on them. `join()` wraps `jax.distributed.initialize` with the timeouts a user can set
on the command line and with errors that say what to do. JAX's client
aborts the process from C++ when the coordinator cannot be reached or a peer
stops sending heartbeats, so the context is printed before joining, and a
process other than 0 first checks that the coordinator's port answers (it
fails with a clear message instead of an abort).
"""

import socket
import sys
import time

import jax
from absl import flags

_MULTIHOST = flags.DEFINE_bool(
    'multihost', False,
    'Multi-process run (TPU pod, several GPU hosts, or processes on one '
    'machine): join the others through jax.distributed, auto-detected on '
    'TPU and SLURM or from the three flags below.')
_COORDINATOR_ADDRESS = flags.DEFINE_string(
    'coordinator_address', None,
    'host:port of process 0, for --multihost without auto-detection.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None,
                                      'Processes in the run.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None,
                                   'This process, 0..num_processes-1.')
_INITIALIZATION_TIMEOUT_S = flags.DEFINE_integer(
    'initialization_timeout_s', 300,
    'Multi-process: seconds to wait for every process to connect to the '
    'coordinator before giving up.')
_HEARTBEAT_TIMEOUT_S = flags.DEFINE_integer(
    'heartbeat_timeout_s', 60,
    'Multi-process: a process silent for this long is declared dead, and '
    'the others exit with an error (instead of waiting for it forever).')
_SHUTDOWN_TIMEOUT_S = flags.DEFINE_integer(
    'shutdown_timeout_s', 60,
    'Multi-process: seconds a finished process waits for the others at exit.')


def _wait_for_port(address: str, timeout_s: float) -> bool:
  """Whether host:port accepts a TCP connection within `timeout_s`."""
  host, _, port = address.rpartition(':')
  deadline = time.monotonic() + timeout_s
  while True:
    try:
      with socket.create_connection((host.strip('[]'), int(port)), timeout=2):
        return True
    except OSError:
      if time.monotonic() >= deadline:
        return False
      time.sleep(0.5)


def join(coordinator_address: str | None, num_processes: int | None,
         process_id: int | None, *, initialization_timeout_s: int,
         heartbeat_timeout_s: int, shutdown_timeout_s: int) -> None:
  """Connects this process to the others (all three None: auto-detect).

  Args:
    coordinator_address: host:port of process 0's coordinator.
    num_processes: processes in the run.
    process_id: this process, 0..num_processes-1.
    initialization_timeout_s: how long to wait for every process to connect.
    heartbeat_timeout_s: a process silent this long is declared dead; the
      others then exit with an error naming it.
    shutdown_timeout_s: how long a finished process waits for the others.

  Raises:
    SystemExit: the coordinator's port did not answer in time.
  """
  # CPU hosts need gloo for cross-process collectives; accelerators ignore it.
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  if coordinator_address and process_id:
    if not _wait_for_port(coordinator_address, initialization_timeout_s):
      raise SystemExit(
          f'Process {process_id}: nothing answers at the coordinator '
          f'{coordinator_address} after {initialization_timeout_s}s. Start '
          'process 0 (it hosts the coordinator) with the same '
          '--coordinator_address, check the host and port, or raise '
          '--initialization_timeout_s.')
  print(f'Joining the run: process {process_id} of {num_processes}, '
        f'coordinator {coordinator_address or "auto-detected"}; waiting up to '
        f'{initialization_timeout_s}s for every process (an abort with '
        'DEADLINE_EXCEEDED here means some process never connected). A peer '
        f'silent for {heartbeat_timeout_s}s is declared dead and this process '
        'then exits with an error.', file=sys.stderr, flush=True)
  jax.distributed.initialize(
      coordinator_address, num_processes, process_id,
      initialization_timeout=initialization_timeout_s,
      heartbeat_timeout_seconds=heartbeat_timeout_s,
      shutdown_timeout_seconds=shutdown_timeout_s)


def join_if_asked() -> None:
  """Joins the multi-process run when --multihost was given."""
  if _MULTIHOST.value:
    join(_COORDINATOR_ADDRESS.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
         initialization_timeout_s=_INITIALIZATION_TIMEOUT_S.value,
         heartbeat_timeout_s=_HEARTBEAT_TIMEOUT_S.value,
         shutdown_timeout_s=_SHUTDOWN_TIMEOUT_S.value)
