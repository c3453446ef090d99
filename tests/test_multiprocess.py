"""Real multi-process JAX: two main.py processes on localhost, gloo collectives.

Each process has 2 CPU devices, so the mesh spans 4 devices in 2 processes.
Every launch has an outer deadline: a hang fails the test instead of
stalling the suite.
"""

import glob
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from facegan_jax import evaluate
from facegan_jax import saved_run
from tests import process_output

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OVERRIDES = {
    'model.g_width': 8, 'model.d_width': 8, 'model.latent_dim': 16,
    'batch_size': 8, 'n_critic': 2, 'log_every': 1, 'sample_every': 2,
    'num_samples': 4, 'dataset.num_images': 64, 'dataset.shuffle_buffer': 64,
    'checkpoint_every': 2}
DEADLINE_S = 300


def _free_port() -> int:
  with socket.socket() as sock:
    sock.bind(('127.0.0.1', 0))
    return sock.getsockname()[1]


def _env(num_devices: int) -> dict[str, str]:
  env = dict(os.environ)
  env['XLA_FLAGS'] = f'--xla_force_host_platform_device_count={num_devices}'
  env['JAX_PLATFORMS'] = 'cpu'
  return env


def _start_two_processes(workdir, num_train_steps: int, *extra_flags):
  """Starts main.py as processes 0 and 1 of 2 (output on their stdout)."""
  port = _free_port()
  flags = [f'--config.{key}={value}' for key, value in OVERRIDES.items()]
  return [
      subprocess.Popen(
          [sys.executable, '-u', 'main.py',
           '--config=configs/wgan_gp.py:res=32', *flags,
           f'--config.num_train_steps={num_train_steps}',
           f'--workdir={workdir}', '--multihost',
           f'--coordinator_address=127.0.0.1:{port}', '--num_processes=2',
           f'--process_id={index}', *extra_flags],
          cwd=REPO, env=_env(2), stdout=subprocess.PIPE,
          stderr=subprocess.STDOUT, text=True)
      for index in range(2)]


def _finish(processes, deadline_s=DEADLINE_S) -> list[str]:
  """Waits for all; kills all and fails if any is still running at the end."""
  deadline = time.time() + deadline_s
  outputs = []
  try:
    for process in processes:
      outputs.append(process.communicate(
          timeout=max(deadline - time.time(), 1))[0])
  except subprocess.TimeoutExpired:
    for process in processes:
      process.kill()
    pytest.fail(f'2-process run still going after {deadline_s}s (a hang)')
  return outputs


def _train_with_two_processes(workdir, num_train_steps: int,
                              *extra_flags) -> list[str]:
  """Runs main.py as processes 0 and 1 of 2 to the end; their outputs."""
  processes = _start_two_processes(workdir, num_train_steps, *extra_flags)
  outputs = _finish(processes)
  for process, output in zip(processes, outputs):
    assert process.returncode == 0, output[-3000:]
  return outputs


def _reference(tmp_path, num_steps: int) -> dict[str, np.ndarray]:
  """One process, 4 devices, the global batches the 2 processes assemble."""
  out = tmp_path / 'reference.npz'
  subprocess.run(
      [sys.executable, os.path.join('tests', 'two_process_reference.py'),
       json.dumps(OVERRIDES), str(num_steps), str(out)],
      cwd=REPO, env=_env(4), check=True, timeout=DEADLINE_S)
  return dict(np.load(out))


def _have_inception_weights() -> bool:
  from facegan_jax import metrics  # pylint: disable=g-import-not-at-top
  try:
    metrics.find_weights(download=False)
  except metrics.WeightsNotFoundError:
    return False
  return True


# FID at step 3 of the resumed run, on the whole (64-image) dataset as the
# reference, so the reference set does not depend on how the data is split.
EVAL_FLAGS = ('--config.eval_every=3', '--config.eval_num_samples=8',
              '--config.eval_reference_images=64',
              '--config.eval_batch_size=8')


def test_two_processes_train_and_resume_like_one_process(tmp_path):
  workdir = tmp_path / 'run'
  first = _train_with_two_processes(workdir, 2)
  assert all('on 4 cpu device(s), steps 0->2' in out for out in first)
  evaluating = _have_inception_weights()
  eval_flags = (*EVAL_FLAGS, f'--config.eval_cache_dir={tmp_path / "cache2"}'
               ) if evaluating else ()
  resumed = _train_with_two_processes(workdir, 3, *eval_flags)
  assert all('Resuming from step 2' in out for out in resumed)

  config, _, state, meta = saved_run.restore_run(str(workdir))
  assert int(state.step) == 3 and meta['process_count'] == 2
  reference = _reference(tmp_path, 3)
  assert int(reference.pop('num_devices')) == 4
  # Each process read its own, disjoint share of the data.
  shares = [set(reference.pop(f'digests_{i}')) for i in range(2)]
  assert len(shares[0]) == len(shares[1]) == 3 * config.n_critic * 4
  assert not shares[0] & shares[1]
  trained = {jax.tree_util.keystr(path): np.asarray(leaf)
             for path, leaf in jax.tree_util.tree_leaves_with_path(
                 {'g_params': state.g_params, 'd_params': state.d_params})}
  assert trained.keys() == reference.keys()
  for key, value in reference.items():
    np.testing.assert_allclose(trained[key], value, rtol=2e-4, atol=2e-5,
                               err_msg=key)
  # One writer: process 0 alone writes TensorBoard events and sample PNGs.
  assert len(glob.glob(str(workdir / 'events.out.tfevents.*'))) == 2  # 2 runs
  assert sorted(os.listdir(workdir / 'samples')) == [
      'ema_0000002.png', 'ema_0000003.png', 'raw_0000002.png',
      'raw_0000003.png']

  if evaluating:
    # Both processes extracted their shares; one process gets the same FID.
    record = json.loads((workdir / 'eval' / 'scores.jsonl').read_text())
    assert record['step'] == 3 and record['num_real'] == 64
    alone = evaluate.evaluate_workdir(
        str(workdir), step=3, num_samples=8, reference_images=64,
        batch_size=8, metrics='fid', progress=False,
        cache_dir=str(tmp_path / 'cache1'))
    assert alone['dataset_fingerprint'] == record['dataset_fingerprint']
    assert alone['fid'] == pytest.approx(record['fid'], rel=1e-6)
    assert os.listdir(workdir / 'best') == ['3']  # Written once, by Orbax.
    # The evaluate tool across two processes: the same FID, printed once.
    # Process 0's cache holds the reference statistics, process 1's does not
    # (caches local to each host): both must still extract together.
    caches = [tmp_path / 'cache1', tmp_path / 'empty_cache']
    port = _free_port()
    tools = [subprocess.Popen(
        [sys.executable, '-m', 'facegan_jax.evaluate', f'--workdir={workdir}',
         '--step=3', '--num_samples=8', '--reference_images=64',
         '--batch_size=8', '--metrics=fid', f'--cache_dir={caches[index]}',
         '--multihost', f'--coordinator_address=127.0.0.1:{port}',
         '--num_processes=2', f'--process_id={index}'],
        cwd=REPO, env=_env(2), stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True) for index in range(2)]
    printed = _finish(tools)
    assert [tool.returncode for tool in tools] == [0, 0]
    assert printed[1] == ''
    assert json.loads(printed[0])['fid'] == pytest.approx(record['fid'],
                                                          rel=1e-6)

  # One process resuming a 2-process run says that the data order changes.
  flags = [f'--config.{key}={value}' for key, value in OVERRIDES.items()]
  alone = subprocess.run(
      [sys.executable, 'main.py', '--config=configs/wgan_gp.py:res=32', *flags,
       '--config.num_train_steps=4', f'--workdir={workdir}'],
      cwd=REPO, env=_env(1), capture_output=True, text=True,
      timeout=DEADLINE_S)
  assert alone.returncode == 0, alone.stderr[-3000:]
  assert ('saved by 2 process(es) and resumes with 1' in alone.stdout and
          'data order' in alone.stdout), alone.stdout


@pytest.mark.parametrize('signalled', ['process 1 only', 'both, apart'])
def test_sigterm_stops_every_process_after_the_same_step(tmp_path, signalled):
  processes = _start_two_processes(tmp_path, 100_000,
                                   '--config.checkpoint_every=100000')
  early = [process_output.read_until(process, 'step 3/', DEADLINE_S)
           for process in processes]
  if signalled == 'process 1 only':
    processes[1].send_signal(signal.SIGTERM)
  else:
    processes[0].send_signal(signal.SIGTERM)
    time.sleep(0.5)
    processes[1].send_signal(signal.SIGTERM)
  outputs = [a + b for a, b in zip(early, _finish(processes))]
  stopped = []
  for process, output in zip(processes, outputs):
    assert process.returncode == 0, output[-3000:]
    stopped += re.findall(r'Stopped at step (\d+); checkpoint saved', output)
  assert len(stopped) == 2 and stopped[0] == stopped[1], outputs
  # One checkpoint, written by both processes together, at that step.
  assert os.listdir(tmp_path / 'checkpoints') == [stopped[0]]
  config, _, state, _ = saved_run.restore_run(str(tmp_path))
  assert int(state.step) == int(stopped[0]) and config.n_critic == 2


def _complete_steps(workdir) -> list[int]:
  folder = workdir / 'checkpoints'
  return sorted(int(d) for d in os.listdir(folder) if d.isdigit())


def test_a_killed_peer_ends_the_survivor_and_both_resume(tmp_path):
  heartbeat_timeout_s = 10
  processes = _start_two_processes(
      tmp_path, 100_000, '--config.checkpoint_every=3',
      f'--heartbeat_timeout_s={heartbeat_timeout_s}')
  for process in processes:
    process_output.read_until(process, 'step 7/', DEADLINE_S)
  killed = time.time()
  processes[1].kill()  # SIGKILL: no handler, no goodbye.
  survivor = _finish(processes[:1], deadline_s=heartbeat_timeout_s + 60)[0]
  processes[1].wait()
  assert processes[0].returncode != 0
  assert time.time() - killed < heartbeat_timeout_s + 60
  assert 'heartbeat' in survivor, survivor[-3000:]  # Names the likely cause.
  # The newest complete checkpoint loads, and both processes resume from it.
  newest = _complete_steps(tmp_path)[-1]
  assert newest >= 3
  _, _, state, _ = saved_run.restore_run(str(tmp_path))
  assert int(state.step) == newest
  outputs = _train_with_two_processes(tmp_path, newest + 1)
  assert all(f'Resuming from step {newest}' in out for out in outputs)


def _join_alone(tmp_path, process_id: int) -> subprocess.CompletedProcess:
  """main.py as one process of 2 whose peer never starts (3 s timeout)."""
  return subprocess.run(
      [sys.executable, 'main.py', '--config=configs/wgan_gp.py:res=32',
       f'--workdir={tmp_path}', '--multihost',
       f'--coordinator_address=127.0.0.1:{_free_port()}', '--num_processes=2',
       f'--process_id={process_id}', '--initialization_timeout_s=3'],
      cwd=REPO, env=_env(2), capture_output=True, text=True,
      timeout=DEADLINE_S)


def test_an_unreachable_coordinator_fails_fast_and_says_what_to_do(tmp_path):
  started = time.time()
  result = _join_alone(tmp_path, process_id=1)
  assert result.returncode == 1
  assert 'nothing answers at the coordinator' in result.stderr
  assert 'Start process 0' in result.stderr
  assert time.time() - started < 60


def test_a_coordinator_whose_peers_never_come_gives_up_in_time(tmp_path):
  started = time.time()
  result = _join_alone(tmp_path, process_id=0)
  assert result.returncode != 0
  # JAX ends the process from C++; the line printed before says what it means.
  assert 'waiting up to 3s for every process' in result.stderr
  assert 'DEADLINE_EXCEEDED' in result.stderr
  assert time.time() - started < 60
