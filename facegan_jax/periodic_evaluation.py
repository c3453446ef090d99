"""Evaluation inside the training loop: scores every eval_every steps.

`PeriodicEvaluator` keeps the Inception extractor and the reference
statistics for the whole run, appends each result to
`<workdir>/eval/scores.jsonl` and tracks the best FID (remembered across a
resume); `keep_best` saves the best state as a real checkpoint in
`<workdir>/best/<step>/` (an Orbax manager keeping the lowest FID), which
`evaluate --workdir=W/best` and `init_from=W/best` load like any run.
"""

import json
import math
from typing import Any

import jax
import ml_collections
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from facegan_jax import checkpointing
from facegan_jax import conditioning
from facegan_jax import metrics as metrics_lib
from facegan_jax import scoring
from facegan_jax import train_step as train_step_lib


class PeriodicEvaluator:
  """FID (and KID/IS/PR if config.eval_metrics asks) every eval_every steps.

  Use in the loop (every process, at every step):

    evaluator = PeriodicEvaluator(config, program, workdir)
    if config.eval_every:
      evaluator.prepare(start_step)  # Fail fast; recall the best so far.
    ...
    scores = evaluator(state, step)  # None unless step % eval_every == 0.
    if scores is not None and evaluator.best_step == step:
      evaluator.keep_best(state, meta)
    ...
    evaluator.close()

  The extractor and the reference statistics are built by `prepare()` (else
  on first use). Every process must call it at the same steps: all take
  part in feature extraction and all get the same scores and best_fid.
  Process 0 appends each result with its provenance to
  `<workdir>/eval/scores.jsonl`.

  Attributes:
    best_fid: lowest FID so far (inf before the first), including FIDs of
      earlier steps of this run found in scores.jsonl (a resumed run
      remembers its best), if computed with the same weights, reference and
      sample count.
    best_step: the step of best_fid (None before the first).
    last_result: the full result dict of the latest evaluation.
  """

  def __init__(self, config: ml_collections.ConfigDict,
               program: train_step_lib.Program, workdir: str, *,
               extractor: metrics_lib.FeatureExtractor | None = None,
               progress: bool = True):
    self.config = config
    self.program = program
    self.every = config.eval_every
    self.num_samples = config.eval_num_samples
    self.metrics = scoring.parse_metrics(config.eval_metrics)
    self.workdir = epath.Path(workdir)
    self.best_dir = epath.Path(workdir) / 'best'
    self.scores_path = epath.Path(workdir) / 'eval' / 'scores.jsonl'
    self.progress = progress
    self.best_fid = math.inf
    self.best_step = None
    self.last_result = None
    self._extractor = extractor
    self._reference = None
    self._best_checkpointer = None

  def due(self, step: int) -> bool:
    """Whether `step` is an evaluation step."""
    return self.every > 0 and step > 0 and step % self.every == 0

  def prepare(self, start_step: int | None = None) -> None:
    """Finds the weights and the reference statistics now (fail fast).

    Also recalls best_fid from the comparable records of scores.jsonl up to
    `start_step` (the step a resumed run restarts from; None = all records):
    later ones belong to a continuation the resume discarded.
    """
    if self._extractor is None:
      self._extractor = metrics_lib.feature_extractor(
          scoring.mesh_of(self.program),
          weights_path=(self.config.eval_weights
                        or None))
    if self._reference is None:
      self._reference = scoring.dataset_reference(
          self.config, self._extractor,
          self.config.eval_reference_images,
          cache_dir=(self.config.eval_cache_dir
                     or None),
          progress=self.progress)
      self._recall_best(start_step)

  def __call__(self, state: Any, step: int,
               force: bool = False) -> dict[str, float] | None:
    """Evaluates `state` if `step` is due (or `force`).

    Returns:
      None when not due; else the requested scores as floats (e.g. {'fid'}
      or {'fid', 'kid_mean', 'kid_std'}) plus 'best_fid' when FID is one.
    """
    if not (force or self.due(step)):
      return None
    self.prepare(start_step=step - 1)
    result = scoring.evaluate_state(
        self.config, self.program, state, self._extractor, self._reference,
        self.num_samples, self.metrics, progress=self.progress,
        label_bank=conditioning.label_bank_of(self.workdir,
                                              self.program.attributes))
    result['step'] = int(step)
    self.last_result = result
    fid = result['fid']
    if 'fid' in self.metrics and math.isfinite(fid) and fid < self.best_fid:
      self.best_fid, self.best_step = fid, int(step)
    self._agree_on_best()
    if jax.process_index() == 0:
      self._append_record(json.dumps(scoring.json_ready(result),
                                     sort_keys=True))
    scores = {key: float(result[key]) for name in self.metrics
              for key in scoring.METRIC_KEYS[name]}
    if 'fid' in self.metrics:
      scores['best_fid'] = self.best_fid
    return scores

  def keep_best(self, state: Any, meta: dict[str, Any]) -> None:
    """Saves `state` (the best_step's) to best_dir; all processes call it.

    Orbax writes it (every process its shards, one commit) and keeps only the
    checkpoint with the lowest FID.
    """
    if self._best_checkpointer is None:
      self._best_checkpointer = checkpointing.Checkpointer(
          self.best_dir, keep=1, best_fn=lambda metrics: metrics['fid'])
    self._best_checkpointer.save(state, meta, force=True,
                                 metrics={'fid': self.best_fid})

  def close(self) -> None:
    """Waits for a best-checkpoint save in flight."""
    if self._best_checkpointer is not None:
      self._best_checkpointer.close()
      self._best_checkpointer = None

  def _append_record(self, line: str) -> None:
    # Rewritten whole, not appended: bucket files (epath) cannot be appended
    # to, and this file holds one short line per evaluation.
    self.scores_path.parent.mkdir(parents=True, exist_ok=True)
    old = self.scores_path.read_text() if self.scores_path.exists() else ''
    self.scores_path.write_text(old + line + '\n')

  def _recall_best(self, start_step: int | None) -> None:
    """best_fid/best_step from earlier, comparable records of this run."""
    if jax.process_index() != 0 or not self.scores_path.exists():
      self._agree_on_best()
      return
    # A FID is comparable only with the same weights, reference and samples.
    expected = {
        'weights_sha256': self._extractor.weights.sha256,
        'dataset_fingerprint': self._reference.info['dataset_fingerprint'],
        'num_real': float(self._reference.features.shape[0]),
        'num_fake': float(self.num_samples),
        'sample_seed': scoring.EVAL_SEED,
        'use_ema': True}
    for line in self.scores_path.read_text().splitlines():
      try:
        record = json.loads(line)
      except json.JSONDecodeError:
        continue  # A line cut short by a crash.
      fid, step = record.get('fid'), record.get('step')
      if (isinstance(fid, (int, float)) and isinstance(step, int) and
          (start_step is None or step <= start_step) and
          fid < self.best_fid and
          all(record.get(k) == v for k, v in expected.items())):
        self.best_fid, self.best_step = float(fid), step
    self._agree_on_best()

  def _agree_on_best(self) -> None:
    """Every process takes process 0's best (only it reads scores.jsonl),
    so a decision such as saving a checkpoint is the same everywhere."""
    if jax.process_count() == 1:
      return
    best = multihost_utils.broadcast_one_to_all(np.array(
        [self.best_fid, -1 if self.best_step is None else self.best_step],
        np.float64))
    self.best_fid = float(best[0])
    self.best_step = None if best[1] < 0 else int(best[1])
