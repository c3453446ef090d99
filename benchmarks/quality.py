r"""Sample quality of a recipe on real faces for a wall-clock budget.

Prepares the faces (once), trains the recipe until its `max_train_minutes`
budget stops it, scores the EMA generator with the project's FID, KID and
precision/recall, and prints one JSON line with the figures, the commands,
the machine and the provenance of the scores. Issue 14's 32x32 setting:

  python benchmarks/quality.py --config=configs/celeba32_cpu.py \
      --faces=../shared/data/celeba_10k --prepared=/tmp/celeba10k_32 \
      --workdir=/tmp/quality32 --seed=0

(celeba_10k centre-cropped to 70x70 with --crop=celeba, resized to 32x32,
all 10,000 faces used for training; 5,000 EMA samples scored against the
10,000 training images.) `--every_minutes=15` also scores the checkpoint
nearest each 15-minute mark (one JSON line each, then the final line):
FID against time. `--skip_training` scores an existing --workdir. Scores
are saved in the workdir (quality_scores.json) and reused, so a longer run
can be scored coarse to fine (--every_minutes=60, then =15) or resumed.

The budget is the recipe's `config.max_train_minutes`, counted from
launching main.py; pass --minutes to override it. Training and scoring run
one after the other, not together: a score is only comparable with others
made on an otherwise idle machine.
"""

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
SCORES_FILE = 'quality_scores.json'  # {"step:num_samples:reference": result}


# The provenance each JSON line carries (scoring.evaluate_state's keys).
PROVENANCE_KEYS = ('weights_sha256', 'weights_source', 'reference_sha256',
                   'dataset_fingerprint', 'resize_method',
                   'reference_resize_method', 'inception_input_size',
                   'num_real', 'num_fake', 'sample_seed', 'use_ema')


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      description=__doc__.split('\n\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
  parser.add_argument('--config', default='configs/celeba32_cpu.py',
                      help='recipe, with an optional :argument string')
  parser.add_argument('--faces', default=str(REPO.parent / 'shared' / 'data' /
                                             'celeba_10k'),
                      help='folder of face images to prepare')
  parser.add_argument('--prepared', required=True,
                      help='prepared dataset folder (written if missing)')
  parser.add_argument('--resolution', type=int, default=32)
  parser.add_argument('--crop', default='celeba',
                      choices=('celeba', 'center', 'none'))
  parser.add_argument('--labels', default=None,
                      help='attribute labels file for prepare (a conditional '
                           'run: add --extra=--config.dataset.attributes=...)')
  parser.add_argument('--reference_prepared', default=None,
                      help='score against this prepared folder instead '
                           '(evaluate --reference_prepared)')
  parser.add_argument('--workdir', required=True, help='the training run')
  parser.add_argument('--seed', type=int, default=0, help='config.seed')
  parser.add_argument('--minutes', type=float, default=None,
                      help='override config.max_train_minutes')
  parser.add_argument('--num_samples', type=int, default=5000,
                      help='EMA samples scored')
  parser.add_argument('--every_minutes', type=float, default=0.0,
                      help='also score the checkpoints nearest each multiple '
                           'of this many minutes (keeps every checkpoint)')
  parser.add_argument('--skip_training', action='store_true',
                      help='score --workdir as it is')
  parser.add_argument('--extra', action='append', default=[],
                      help='more main.py flags, e.g. '
                           '--extra=--config.batch_size=32')
  return parser


def machine() -> str:
  """'<cpu model>, N cores' (or the platform when /proc/cpuinfo is absent)."""
  model = platform.processor() or platform.machine()
  try:
    for line in pathlib.Path('/proc/cpuinfo').read_text().splitlines():
      if line.startswith('model name'):
        model = line.split(':', 1)[1].strip()
        break
  except OSError:
    pass
  return f'{model}, {os.cpu_count()} cores'


def _run(command: list[str], log: pathlib.Path | None = None) -> str:
  """Runs `command` from the repository root; exits with a message on error.

  With `log`, all its output goes there (training's progress: watch it with
  tail -f) and '' is returned; else its stdout is returned and its stderr
  passes through.
  """
  print('+ ' + ' '.join(command), file=sys.stderr, flush=True)
  name = command[2] if command[1] == '-m' else command[1]
  if log:
    with open(log, 'w') as log_file:
      result = subprocess.run(command, cwd=REPO, stdout=log_file,
                              stderr=subprocess.STDOUT, check=False)
  else:
    result = subprocess.run(command, cwd=REPO, stdout=subprocess.PIPE,
                            text=True, check=False)
  if result.returncode:
    sys.exit(f'Error: {name} exited with {result.returncode}'
             + (f'; its log: {log}' if log else ''))
  return result.stdout or ''


def prepare(args) -> list[str]:
  command = [sys.executable, '-m', 'input_pipeline.prepare',
             f'--src={args.faces}', f'--out={args.prepared}',
             f'--resolution={args.resolution}', f'--crop={args.crop}']
  if args.labels:
    command.append(f'--labels={args.labels}')
  if not (pathlib.Path(args.prepared) / 'manifest.json').is_file():
    _run(command)
  return command


def train(args) -> tuple[list[str], float]:
  """Trains the recipe; returns the command and its wall-clock minutes."""
  command = [sys.executable, 'main.py', f'--config={args.config}',
             f'--workdir={args.workdir}', '--config.dataset.source=folder',
             f'--config.dataset.path={args.prepared}',
             f'--config.seed={args.seed}', *args.extra]
  if args.minutes is not None:
    command.append(f'--config.max_train_minutes={args.minutes}')
  if args.every_minutes:
    command.append('--config.keep_checkpoints=1000')
  os.makedirs(args.workdir, exist_ok=True)
  pathlib.Path(args.workdir, SCORES_FILE).unlink(missing_ok=True)  # Stale.
  start = time.time()
  pathlib.Path(args.workdir, 'quality_launch_time').write_text(str(start))
  _run(command, pathlib.Path(args.workdir) / 'quality_train.log')
  return command, (time.time() - start) / 60


def score(args, step: int) -> tuple[list[str], dict]:
  """Scores checkpoint `step`, or returns its score saved in --workdir.

  Scores are kept (SCORES_FILE) so that an interrupted or widened FID
  against time, e.g. --every_minutes=60 first and =15 later, never scores
  a checkpoint twice.
  """
  command = [sys.executable, '-m', 'facegan_jax.evaluate',
             f'--workdir={args.workdir}', f'--num_samples={args.num_samples}',
             '--metrics=fid,kid,pr', f'--step={step}']
  if args.reference_prepared:
    command.append(f'--reference_prepared={args.reference_prepared}')
  key = f'{step}:{args.num_samples}:{args.reference_prepared or "training"}'
  path = pathlib.Path(args.workdir, SCORES_FILE)
  saved = json.loads(path.read_text()) if path.is_file() else {}
  if key not in saved:
    saved[key] = json.loads(_run(command).strip().splitlines()[-1])
    path.write_text(json.dumps(saved, indent=1))
  return command, saved[key]


def checkpoint_steps(workdir: str) -> list[int]:
  return sorted(int(path.name) for path in
                pathlib.Path(workdir, 'checkpoints').iterdir()
                if path.name.isdigit())


def checkpoints_by_minute(workdir: str) -> dict[int, float]:
  """{step: minutes after launch at which its checkpoint was written}."""
  launch = float(pathlib.Path(workdir, 'quality_launch_time').read_text())
  checkpoints = pathlib.Path(workdir, 'checkpoints')
  return {step: (checkpoints.joinpath(str(step)).stat().st_mtime - launch) / 60
          for step in checkpoint_steps(workdir)}


def row(scores: dict, steps: int, **extra) -> dict:
  """One table row: the scores, the step count, `extra`, machine, provenance."""
  return {
      'fid': scores['fid'], 'kid': scores['kid_mean'],
      'precision': scores['precision'], 'recall': scores['recall'],
      'steps': steps, **extra,
      'machine': machine(),
      'provenance': {k: scores.get(k) for k in PROVENANCE_KEYS}}


def main(argv=None) -> None:
  args = _parser().parse_args(argv)
  prepare_command = prepare(args)
  train_command, train_minutes = None, None
  if not args.skip_training:
    train_command, train_minutes = train(args)

  if args.every_minutes:
    marks = checkpoints_by_minute(args.workdir)
    chosen = {}
    for step, minute in sorted(marks.items()):
      mark = round(minute / args.every_minutes) * args.every_minutes
      if mark and (mark not in chosen or abs(minute - mark) <
                   abs(marks[chosen[mark]] - mark)):
        chosen[mark] = step
    for mark, step in sorted(chosen.items()):
      _, result = score(args, step)
      print(json.dumps(row(result, step, minutes=round(marks[step], 1),
                           time_mark=mark)), flush=True)
  last = checkpoint_steps(args.workdir)[-1]
  score_command, result = score(args, last)
  if train_minutes is None and pathlib.Path(args.workdir,
                                            'quality_launch_time').is_file():
    train_minutes = checkpoints_by_minute(args.workdir)[last]
  print(json.dumps(row(
      result, result['step'], minutes=None if train_minutes is None else round(
          train_minutes, 1),
      config=args.config, seed=args.seed,
      commands=[' '.join(c) for c in (prepare_command, train_command,
                                      score_command) if c])))


if __name__ == '__main__':
  main()
