"""Times the train step: compile, critic step, generator step, full iteration.

  python benchmarks/train_step.py --config=configs/wgan_gp.py [--torch_reference]

Prints a readable table, then, as its last line, one JSON object with config,
backend, batch_size, compile_s, critic_step_s, generator_step_s,
iteration_s, images_per_s, sec_per_kimg, gflops_per_s, peak_gflops_per_s,
peak_memory_gib (and with --torch_reference torch_iteration_s, its critic and
generator steps, and ratio = iteration_s / torch_iteration_s). Runs without
TensorFlow: batches are random images placed on the mesh, so only the step is
timed. With --torch_reference both frameworks are timed in alternating
rounds (medians over --repeats rounds), so a slow spell of a shared machine
slows both alike. peak_memory_gib is our process's peak before the peer runs
(on CPU the resident set, which includes the peer's parameters).
"""

import json
import os
import resource
import statistics
import sys
import time
from typing import Any, Callable

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top
import jax
import jax.numpy as jnp
import numpy as np
from absl import app
from absl import flags
from ml_collections import config_flags

from facegan_jax import host_memory
from facegan_jax import partitioning
from facegan_jax import train_step as train_step_lib

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', 'configs/wgan_gp.py',
                                'Config (recipe[:args]) to benchmark.',
                                lock_config=True)
flags.DEFINE_integer('repeats', 5, 'Timed repetitions of each step.')
flags.DEFINE_bool('torch_reference', False,
                  'Also time the PyTorch peer (benchmarks/torch_reference.py).')


_PAUSE_S = 1.0


def _seconds(fn) -> float:
  start = time.perf_counter()
  jax.block_until_ready(fn())
  return time.perf_counter() - start


def _median_seconds(fn, repeats: int) -> float:
  return statistics.median(_seconds(fn) for _ in range(repeats))


def interleaved_medians(fns: dict[str, Callable[[], Any]],
                        repeats: int) -> dict[str, float]:
  """Median seconds of each function, timed in alternating rounds.

  Each round runs every function once, so a slow spell of a shared machine
  hits all of them alike and the ratios stay meaningful. A short untimed
  pause before each call lets the previous runtime's worker threads stop
  spinning (they would otherwise slow the next framework down).
  """
  times = {name: [] for name in fns}
  for _ in range(repeats):
    for name, fn in fns.items():
      time.sleep(_PAUSE_S)
      times[name].append(_seconds(fn))
  return {name: statistics.median(t) for name, t in times.items()}


def matmul_peak_gflops(n: int = 2048, repeats: int = 5) -> float:
  """Measured float32 matmul throughput of the default device."""
  a = jnp.ones((n, n), jnp.float32)
  matmul = jax.jit(lambda x: x @ x)
  jax.block_until_ready(matmul(a))
  return 2 * n ** 3 / _median_seconds(lambda: matmul(a), repeats) / 1e9


def _flops(compiled) -> float:
  analysis = compiled.cost_analysis()
  if isinstance(analysis, (list, tuple)):
    analysis = analysis[0]
  return float((analysis or {}).get('flops', 0.0))


def _peak_memory_gib() -> float:
  stats = jax.local_devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    return stats['peak_bytes_in_use'] / 2 ** 30
  # CPU: the process's peak resident memory (KiB on Linux).
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def benchmark(config, repeats: int,
              peers: dict[str, Callable[[], Any]] | None = None) -> dict:
  """Times `config`'s step on all devices; returns the figures.

  Args:
    config: the full config.
    repeats: timed rounds.
    peers: more functions to time in the same rounds (the PyTorch peer),
      by the figure name they report.
  """
  peers = dict(peers or {})
  mesh = partitioning.create_mesh()
  program = train_step_lib.build_program(config, mesh)
  generator, discriminator = program.generator, program.discriminator
  g_tx, d_tx, g_schedule, d_schedule = train_step_lib.create_optimizers(config)
  critic_phase, generator_phase = train_step_lib.make_train_phases(
      config, generator, discriminator, g_tx, d_tx, g_schedule, d_schedule,
      mesh)
  res, batch, n_critic = (config.dataset.resolution, config.batch_size,
                          config.n_critic)
  rng = np.random.default_rng(0)

  def images(n):
    host = rng.uniform(-1, 1, (n, batch, res, res, 3)).astype(np.float32)
    return partitioning.make_global_batch(host, mesh, batch_axis=1)

  state = program.init(jax.random.PRNGKey(0))
  full_images, one_images = images(n_critic), images(1)

  start = time.perf_counter()
  step = program.step.lower(state, full_images).compile()
  compile_s = time.perf_counter() - start
  critic = jax.jit(critic_phase).lower(state, one_images).compile()
  generator_only = jax.jit(generator_phase).lower(
      state, one_images[0]).compile()

  # The full step donates its state: thread a copy through the repetitions
  # and keep `state` for the phases.
  holder = {'state': jax.tree.map(jnp.copy, state)}

  def iteration():
    holder['state'], metrics = step(holder['state'], full_images)
    return metrics

  fns = {
      'iteration_s': iteration,
      'critic_step_s': lambda: critic(state, one_images)[1],
      'generator_step_s': lambda: generator_only(state, one_images[0])[1],
  }
  for fn in fns.values():  # Warm-up, and our peak before any peer runs.
    jax.block_until_ready(fn())
  peak_memory_gib = _peak_memory_gib()
  for fn in peers.values():
    fn()
  seconds = interleaved_medians({**fns, **peers}, repeats)
  iteration_s = seconds['iteration_s']
  images_per_s = n_critic * batch / iteration_s
  # XLA counts a lax.scan body once, whatever its trip count: add the phases
  # (the shared-fakes step has no scan and one generator forward fewer).
  flops = (_flops(step) if config.share_fakes else
           n_critic * _flops(critic) + _flops(generator_only))
  return {
      'backend': jax.default_backend(),
      'devices': mesh.devices.size,
      'batch_size': batch,
      'n_critic': n_critic,
      'compile_s': compile_s,
      **seconds,
      'images_per_s': images_per_s,
      'sec_per_kimg': 1000 / images_per_s,
      'gflops_per_iteration': flops / 1e9,
      'gflops_per_s': flops / 1e9 / iteration_s,
      'peak_memory_gib': peak_memory_gib,
  }


def torch_peers(config) -> tuple[dict[str, Any], dict[str, Callable[[], Any]]]:
  """The PyTorch peer's description and its step functions, by figure name."""
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import torch_reference  # pylint: disable=g-import-not-at-top
  # The peer runs where we do: CUDA beside a GPU backend, else the CPU.
  device = 'cuda' if jax.default_backend() == 'gpu' else 'cpu'
  critic_step, generator_step = torch_reference.make_steps(config, device)

  def iteration():
    for _ in range(config.n_critic):
      critic_step()
    generator_step()

  return torch_reference.about(device), {
      'torch_iteration_s': iteration,
      'torch_critic_step_s': critic_step,
      'torch_generator_step_s': generator_step,
  }


def main(argv):
  del argv
  host_memory.retain_freed_memory()  # As main.py trains.
  config = FLAGS.config
  figures = {'config': config_flags.get_config_filename(FLAGS['config'])}
  peers = {}
  if FLAGS.torch_reference:
    about, peers = torch_peers(config)
    figures.update(about)
  figures.update(benchmark(config, FLAGS.repeats, peers))
  figures['peak_gflops_per_s'] = matmul_peak_gflops()
  figures['fraction_of_peak'] = (figures['gflops_per_s'] /
                                 figures['peak_gflops_per_s'])
  if FLAGS.torch_reference:
    figures['ratio'] = figures['iteration_s'] / figures['torch_iteration_s']
  for key, value in figures.items():
    print(f'{key:>24}: {value:.4g}' if isinstance(value, float)
          else f'{key:>24}: {value}')
  print(json.dumps(figures))


if __name__ == '__main__':
  app.run(main)
