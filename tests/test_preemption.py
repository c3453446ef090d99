"""Real processes: SIGTERM saves and exits 0, SIGKILL loses nothing saved,
a corrupt newest checkpoint is skipped in favour of the one before it."""

import os
import shutil
import signal
import subprocess
import sys

from tests import process_output


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_FLAGS = (
    '--config=configs/wgan_gp.py:res=32', '--config.model.g_width=8',
    '--config.model.d_width=8', '--config.model.latent_dim=16',
    '--config.batch_size=8', '--config.n_critic=2', '--config.log_every=1',
    '--config.sample_every=1000', '--config.num_samples=4',
    '--config.dataset.num_images=64', '--config.dataset.shuffle_buffer=64')


def _start(workdir, *flags):
  return subprocess.Popen(
      [sys.executable, '-u', 'main.py', *TINY_FLAGS, f'--workdir={workdir}',
       *flags], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
      text=True)


def _steps(workdir):
  path = os.path.join(workdir, 'checkpoints')
  return sorted(int(d) for d in os.listdir(path) if d.isdigit())


def _run(workdir, *flags):
  return subprocess.run(
      [sys.executable, 'main.py', *TINY_FLAGS, f'--workdir={workdir}', *flags],
      cwd=REPO, capture_output=True, text=True, timeout=300)


def test_sigterm_finishes_the_step_saves_and_exits_zero(tmp_path):
  process = _start(tmp_path, '--config.num_train_steps=100000',
                   '--config.checkpoint_every=100000')
  process_output.read_until(process, 'step 3/')
  process.send_signal(signal.SIGTERM)
  out, _ = process.communicate(timeout=120)
  assert process.returncode == 0, out
  assert 'checkpoint saved' in out
  saved = _steps(tmp_path)
  assert len(saved) == 1 and saved[0] >= 3
  # The sample grids of the last step, as at the end of a run.
  assert os.path.exists(tmp_path / 'samples' / f'ema_{saved[0]:07d}.png')
  resumed = _run(tmp_path, f'--config.num_train_steps={saved[0] + 1}')
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  assert f'Resuming from step {saved[0]}' in resumed.stdout


def test_time_budget_stops_like_sigterm(tmp_path):
  # 0.25 minutes from launch: imports and compilation take part of it.
  result = _run(tmp_path, '--config.num_train_steps=100000',
                '--config.checkpoint_every=100000',
                '--config.max_train_minutes=0.25')
  assert result.returncode == 0, result.stdout + result.stderr
  assert 'The time budget (max_train_minutes=0.25) is spent' in result.stdout
  # The progress lines' ETA is the budget's, not 100,000 steps'.
  timed = [l for l in result.stdout.splitlines() if 'steps/s' in l]
  assert timed and all(l.endswith('(time budget)') for l in timed), timed
  saved = _steps(tmp_path)
  assert len(saved) == 1 and 1 <= saved[0] < 100000
  assert os.path.exists(tmp_path / 'samples' / f'ema_{saved[0]:07d}.png')


def test_sigkill_keeps_the_last_checkpoint_and_resume_continues(tmp_path):
  process = _start(tmp_path, '--config.num_train_steps=100000',
                   '--config.checkpoint_every=2')
  process_output.read_until(process, 'step 5/')
  process.kill()  # SIGKILL: no handler runs; a save may be in flight
  process.wait(timeout=60)
  saved = _steps(tmp_path)
  assert saved and saved[-1] >= 2
  resumed = _run(tmp_path, f'--config.num_train_steps={saved[-1] + 1}',
                 '--config.checkpoint_every=2')
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  assert f'Resuming from step {saved[-1]}' in resumed.stdout


def test_corrupt_newest_checkpoint_falls_back_to_the_previous(tmp_path):
  first = _run(tmp_path, '--config.num_train_steps=4',
               '--config.checkpoint_every=2')
  assert first.returncode == 0, first.stdout + first.stderr
  assert _steps(tmp_path) == [2, 4]
  state_dir = tmp_path / 'checkpoints' / '4' / 'state'
  for root, _, files in os.walk(state_dir):
    for name in files:
      with open(os.path.join(root, name), 'wb') as f:
        f.write(b'garbage')
  # A half-written save left by a killed run (Orbax's temporary folder).
  shutil.copytree(tmp_path / 'checkpoints' / '2',
                  tmp_path / 'checkpoints' / '6.orbax-checkpoint-tmp-123')
  resumed = _run(tmp_path, '--config.num_train_steps=3',
                 '--config.checkpoint_every=2')
  assert resumed.returncode == 0, resumed.stdout + resumed.stderr
  assert 'checkpoint step 4: state unreadable' in resumed.stderr
  assert 'Resuming from step 2' in resumed.stdout


def _snapshot(folder):
  """Every file under `folder` with its size and modification time."""
  stats = {}
  for root, _, files in os.walk(folder):
    for name in files:
      stat = os.stat(os.path.join(root, name))
      stats[os.path.join(root, name)] = (stat.st_size, stat.st_mtime_ns)
  return stats


def test_resume_with_a_changed_model_is_refused_and_loses_nothing(tmp_path):
  first = _run(tmp_path, '--config.num_train_steps=2',
               '--config.checkpoint_every=2')
  assert first.returncode == 0, first.stdout + first.stderr
  before = _snapshot(tmp_path / 'checkpoints')
  changed = _run(tmp_path, '--config.num_train_steps=4',
                 '--config.checkpoint_every=2', '--config.model.g_width=16')
  assert changed.returncode != 0
  assert 'model.g_width: checkpoint 8 -> now 16' in changed.stderr
  assert 'Training' not in changed.stdout  # Refused before anything ran.
  assert _snapshot(tmp_path / 'checkpoints') == before
