"""Best faces at 64x64 in 2 hours of a 2-core CPU (issue 14's longer budget).

  python -m input_pipeline.prepare --src=celeba_10k --out=PREPARED \
      --resolution=64 --crop=celeba
  python main.py --config=configs/celeba64_cpu.py --workdir=DIR \
      --config.dataset.source=folder --config.dataset.path=PREPARED

The 32x32 recipe of 2026-12-05 (`celeba32_cpu.py`: DCGAN, non-saturating
loss with label smoothing, one critic update per generator update, batches
of 16, a generator twice the critic's width, both learning rates 2e-4, EMA
0.9998 with standing batch-norm statistics, no DiffAugment) one resolution
up, at generator width 96 and critic width 48: an update takes 0.18 s on
this CPU (benchmarks/train_step.py; 0.09 s at 64/32, 0.29 s at 128/64), so
two hours buy ~39,000 updates, near the count at which the 32x32 recipe's
widest generator did best (so the EMA is still in its warm-up, averaging
about the last t/9 updates: see celeba32_cpu.py). FID (README, "64x64,
2 hours"; seed 0, AMD EPYC 2-core) 29.4 at one hour and 22.7 at two,
where the recipe before it (width 48, batch 64, EMA 0.999) scored 52.3 and
32.1.
Those two hours ran with float32 matmul operands; since 2026-12-07 the
recipe inherits celeba32_cpu.py's bfloat16 operands (an update timed alone
109 instead of 158 ms, host memory kept in both).
Learning rates are constant: a run stopped early is the same run, only
shorter.
"""

from configs import celeba32_cpu
from configs import default


def get_config(arg=None):
  config = celeba32_cpu.get_config()
  config.dataset.resolution = 64
  # As measured, even if the 32x32 recipe moves on:
  config.batch_size = 16
  config.optimizer.g_learning_rate = 2e-4
  config.ema_decay = 0.9998
  config.model.g_width = 96
  config.model.d_width = 48
  config.ema_standing_stats = 100  # ~2.5 s with its checkpoint and grids.
  config.max_train_minutes = 119.0  # Leaves a minute for the final checkpoint.
  config.log_every = 100
  config.sample_every = 1000
  config.checkpoint_every = 1000  # ~3 minutes: FID against time has its marks.
  return default.apply_args(config, arg)
