"""benchmarks/: the train-step benchmark's JSON line, and its PyTorch peer.

The peer builds the same models as the project (shapes only, through
jax.eval_shape, plus one tiny update of each step). Skipped where torch is
not installed (an optional benchmark dependency; CI installs the CPU build).
"""

import functools
import importlib.util
import json
import math
import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from facegan_jax import models

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
torch = pytest.importorskip('torch')


def _load_benchmark(name: str):
  """benchmarks/<name>.py as a module, without putting benchmarks/ on
  sys.path (its input_pipeline.py would shadow the package for every
  process spawned later, e.g. the dataset tool's workers)."""
  path = os.path.join(_ROOT, 'benchmarks', f'{name}.py')
  spec = importlib.util.spec_from_file_location(f'benchmark_{name}', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


torch_reference = _load_benchmark('torch_reference')

# The JSON fields the performance issue names: a contract.
_REQUIRED_FIELDS = (
    'config', 'backend', 'batch_size', 'compile_s', 'critic_step_s',
    'generator_step_s', 'iteration_s', 'images_per_s', 'sec_per_kimg',
    'gflops_per_s', 'peak_gflops_per_s', 'torch_iteration_s', 'ratio')


_TINY_ARGS = ('--config=configs/wgan_gp.py:res=32', '--config.batch_size=4',
              '--config.model.g_width=2', '--config.model.d_width=2',
              '--config.model.latent_dim=8', '--config.n_critic=2')


def test_train_step_benchmark_prints_the_json_figures():
  result = subprocess.run(
      [sys.executable, 'benchmarks/train_step.py', *_TINY_ARGS, '--repeats=2',
       '--torch_reference'],
      cwd=_ROOT, capture_output=True, text=True, timeout=600, check=False)
  assert result.returncode == 0, result.stderr[-3000:]
  figures = json.loads(result.stdout.strip().splitlines()[-1])
  assert set(_REQUIRED_FIELDS) <= set(figures)
  assert figures['config'] == 'configs/wgan_gp.py:res=32'
  assert (figures['backend'], figures['batch_size']) == ('cpu', 4)
  for key in _REQUIRED_FIELDS[2:]:
    assert figures[key] > 0, key


@pytest.fixture(scope='module')
def bench():
  """benchmarks/train_step.py as a module (it defines absl flags: once)."""
  return _load_benchmark('train_step')


class _FakeClock:
  """Stands in for the `time` module: only sleep() moves it."""

  def __init__(self):
    self.now = 0.0

  def perf_counter(self):
    return self.now

  def sleep(self, seconds):
    self.now += seconds


def test_interleaved_medians_of_known_durations(bench, monkeypatch):
  clock = _FakeClock()
  monkeypatch.setattr(bench, 'time', clock)
  calls = []

  def takes(name, durations):
    durations = iter(durations)
    def fn():
      calls.append(name)
      clock.sleep(next(durations))
    return fn

  medians = bench.interleaved_medians(
      {'ours': takes('ours', [3.0, 1.0, 2.0]),
       'peer': takes('peer', [5.0, 9.0, 4.0])}, repeats=3)
  # The untimed pauses between calls are not counted.
  assert medians == {'ours': 2.0, 'peer': 5.0}
  assert calls == ['ours', 'peer'] * 3  # Alternating rounds.


def test_figures_from_known_timings(bench, monkeypatch, capsys):
  # Known medians in, known figures out: 2 critic updates of 4 images in
  # 0.25 s are 32 images/s; PyTorch's 0.5 s iteration makes the ratio 0.5.
  seconds = {'iteration_s': 0.25, 'critic_step_s': 0.1,
             'generator_step_s': 0.05, 'torch_iteration_s': 0.5,
             'torch_critic_step_s': 0.2, 'torch_generator_step_s': 0.1}
  medians = lambda fns, repeats: {name: seconds[name] for name in fns}
  monkeypatch.setattr(bench, 'interleaved_medians', medians)
  monkeypatch.setattr(bench, 'matmul_peak_gflops', lambda: 1000.0)
  monkeypatch.chdir(_ROOT)
  # The benchmark puts benchmarks/ on sys.path to find its peer: undo after.
  monkeypatch.setattr(sys, 'path', list(sys.path))
  argv = ['train_step.py', *_TINY_ARGS, '--torch_reference']
  monkeypatch.setattr(sys, 'argv', argv)  # config_flags reads overrides here.
  bench.FLAGS(argv)
  try:
    bench.main([])
  finally:
    bench.FLAGS.unparse_flags()
  figures = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
  assert {k: figures[k] for k in seconds} == seconds
  assert figures['ratio'] == pytest.approx(0.5)
  assert figures['images_per_s'] == pytest.approx(32.0)
  assert figures['sec_per_kimg'] == pytest.approx(1000 / 32)
  assert figures['gflops_per_iteration'] > 0
  assert figures['gflops_per_s'] == pytest.approx(
      4 * figures['gflops_per_iteration'])
  assert figures['fraction_of_peak'] == pytest.approx(
      figures['gflops_per_s'] / 1000.0)


def _config(generator, discriminator, d_norm='none', spectral_norm=False,
            resolution=64, width=4):
  config = default.base_config()
  config.dataset.resolution = resolution
  config.batch_size = 2
  config.model.update(generator=generator, discriminator=discriminator,
                      d_norm=d_norm, spectral_norm=spectral_norm,
                      latent_dim=8, g_width=width, d_width=width)
  return config


def _jax_sizes(config):
  """Sorted sizes of every parameter of our generator and critic."""
  res = config.dataset.resolution
  g = models.create_generator(config.model, res)
  d = models.create_discriminator(config.model, res)
  g_vars = jax.eval_shape(functools.partial(g.init, train=False),
                          jax.random.key(0), jnp.zeros((1, 8)))
  d_vars = jax.eval_shape(functools.partial(d.init, train=False),
                          jax.random.key(0), jnp.zeros((1, res, res, 3)))
  return tuple(sorted(math.prod(a.shape)
                      for a in jax.tree.leaves(variables['params']))
               for variables in (g_vars, d_vars))


def _torch_sizes(config):
  return tuple(sorted(p.numel() for p in module.parameters())
               for module in torch_reference.build_models(config))


@pytest.mark.parametrize('generator,discriminator,d_norm,spectral_norm', [
    ('dcgan', 'dcgan', 'none', False),
    ('dcgan', 'dcgan', 'layer', True),
    ('dcgan', 'dcgan', 'batch', False),
    ('resnet', 'resnet', 'layer', False),
    ('resnet', 'resnet', 'none', True),
    ('dcgan', 'resnet', 'batch', False),
])
def test_peer_has_the_same_parameter_tensors(generator, discriminator,
                                              d_norm, spectral_norm):
  for resolution in (64, 128):
    config = _config(generator, discriminator, d_norm, spectral_norm,
                     resolution)
    assert _torch_sizes(config) == _jax_sizes(config)


def test_dcgan64_peer_matches_the_shared_reference_counts():
  # ../shared/bench/torch_wgan_gp_reference.py, width 64, latent 128.
  config = _config('dcgan', 'dcgan', width=64)
  config.model.latent_dim = 128
  g, d = torch_reference.build_models(config)
  assert sum(p.numel() for p in g.parameters()) == 3_806_083
  assert sum(p.numel() for p in d.parameters()) == 2_764_737


@pytest.mark.parametrize('recipe,overrides', [
    ('wgan_gp', {}),
    ('hinge_sn', {'generator': 'resnet', 'discriminator': 'resnet'}),
    ('dcgan', {}),
])
def test_peer_steps_return_finite_losses(recipe, overrides):
  config = __import__(f'configs.{recipe}', fromlist=['get_config']).get_config(
      'res=64')
  config.batch_size = 2
  config.model.update(latent_dim=8, g_width=2, d_width=2, **overrides)
  critic_step, generator_step = torch_reference.make_steps(config)
  assert math.isfinite(critic_step()) and math.isfinite(generator_step())


def test_peer_refuses_what_it_does_not_implement():
  config = _config('dcgan', 'small_cnn')
  with pytest.raises(ValueError, match='small_cnn'):
    torch_reference.build_models(config)
  config = _config('dcgan', 'dcgan')
  config.loss.penalty = 'r1'
  with pytest.raises(ValueError, match='r1'):
    torch_reference.make_steps(config)


def test_quality_scores_each_checkpoint_once(tmp_path, monkeypatch, capsys):
  quality = _load_benchmark('quality')
  workdir, prepared = tmp_path / 'run', tmp_path / 'prepared'
  prepared.mkdir()
  (prepared / 'manifest.json').write_text('{}')
  launch = 1_000_000.0
  (workdir / 'checkpoints').mkdir(parents=True)
  (workdir / 'quality_launch_time').write_text(str(launch))
  for step, minute in ((100, 14.0), (200, 31.0), (300, 44.0)):
    (workdir / 'checkpoints' / str(step)).mkdir()
    os.utime(workdir / 'checkpoints' / str(step),
             (launch + 60 * minute,) * 2)
  evaluated = []

  def evaluate(command, log=None):  # Stands in for facegan_jax.evaluate.
    step = int(command[-1].split('=')[1])
    evaluated.append(step)
    return json.dumps({'fid': step / 10, 'kid_mean': 0.1, 'precision': 0.5,
                       'recall': 0.2, 'step': step}) + '\n'

  monkeypatch.setattr(quality, '_run', evaluate)
  args = [f'--prepared={prepared}', f'--workdir={workdir}', '--skip_training']
  quality.main(args + ['--every_minutes=30'])
  assert evaluated == [200, 300]
  quality.main(args + ['--every_minutes=15'])  # Only 100 is new.
  assert evaluated == [200, 300, 100]
  rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
  assert [(r['steps'], r['fid'], r.get('time_mark')) for r in rows[2:]] == [
      (100, 10.0, 15.0), (200, 20.0, 30.0), (300, 30.0, 45.0),
      (300, 30.0, None)]  # The last checkpoint takes its mark, scored once.
  assert rows[-1]['minutes'] == 44.0


def test_plot_quality_draws_each_scored_point(tmp_path):
  plot_quality = _load_benchmark('plot_quality')
  rows = [{'steps': 100, 'minutes': 15.2, 'fid': 80.0, 'time_mark': 15.0},
          {'steps': 200, 'minutes': 29.1, 'fid': 40.0, 'time_mark': 30.0},
          {'steps': 200, 'minutes': 29.1, 'fid': 40.0}]  # The final line.
  (tmp_path / 'run.jsonl').write_text(
      '\n'.join(json.dumps(row) for row in rows) + '\n')
  assert plot_quality.read_series(tmp_path / 'run.jsonl') == [
      (15.2, 80.0), (29.1, 40.0)]
  out = tmp_path / 'fid.png'
  plot_quality.main([f'--series=seed 0={tmp_path / "run.jsonl"}',
                     f'--out={out}'])
  from PIL import Image  # pylint: disable=g-import-not-at-top
  image = Image.open(out).convert('RGB')
  axes = plot_quality.Axes({'seed 0': [(15.2, 80.0), (29.1, 40.0)]})
  for point in ((15.2, 80.0), (29.1, 40.0)):
    x, y = axes(*point)
    assert image.getpixel((round(x), round(y))) == plot_quality.COLOURS[0]
  assert image.getpixel((round(x) + 20, round(y) + 20)) == (255, 255, 255)


def test_quality_in_memory_scores_each_mark_on_the_training_clock(tmp_path):
  from PIL import Image  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  faces = tmp_path / 'faces'
  faces.mkdir()
  for i in range(12):
    pixels = rng.integers(0, 256, (50, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(faces / f'{i:02d}.png')
  (faces / 'notes.txt').write_text('not an image')
  out = tmp_path / 'out'
  # A private cache: these random faces' statistics are of no later use.
  cache = tmp_path / 'cache'
  started = time.perf_counter()
  result = subprocess.run(
      [sys.executable, 'benchmarks/quality_in_memory.py', *_TINY_ARGS,
       f'--images={faces}', '--crop=center', '--minutes=0.4',
       '--marks=0.01', '--num_samples=8', f'--out={out}'],
      cwd=_ROOT, capture_output=True, text=True, timeout=600, check=False,
      env={**os.environ, 'FACEGAN_CACHE': str(cache)})
  wall_s = time.perf_counter() - started
  assert result.returncode == 0, result.stderr[-3000:]
  rows = [json.loads(line) for line in result.stdout.splitlines()
          if line.startswith('{')]
  assert rows == [json.loads(line) for line in
                  (out / 'quality.jsonl').read_text().splitlines()]
  first, last = rows
  assert first['steps'] < last['steps']
  assert 0.4 <= last['minutes'] < 0.6
  # The clock stops while scoring: the run lasted its training minutes
  # plus both scores (the first includes compiling the Inception network).
  assert wall_s > 60 * last['minutes'] + first['score_seconds'] + (
      last['score_seconds'])
  for row in rows:
    assert math.isfinite(row['fid']) and row['fid'] > 0
    assert (row['provenance']['num_real'], row['provenance']['num_fake']) == (
        12, 8)
  assert math.isfinite(last['losses']['d_loss'])
  grid = Image.open(out / 'samples_ema.png')
  assert grid.size == (8 * 33 + 1, 8 * 33 + 1)
  assert len(list((cache / 'reference_stats').glob('*.npz'))) == 1
