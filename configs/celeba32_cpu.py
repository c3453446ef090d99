"""Best faces at 32x32 in 30 minutes of a 2-core CPU (issue 14's budget).

  python -m input_pipeline.prepare --src=celeba_10k --out=PREPARED \
      --resolution=32 --crop=celeba
  python main.py --config=configs/celeba32_cpu.py --workdir=DIR \
      --config.dataset.source=folder --config.dataset.path=PREPARED

DCGAN-32 with the non-saturating loss and one critic update per generator
update, in batches of 16. On this CPU the step's cost is about the same per
image from batch 16 to 64 (470-540 images/s in training), so small batches
buy more updates for the same images: 56,000 updates in 29 minutes at batch
16, 25,000 at 32, 12,400 at 64, and FID (README, "Sample quality") 16.0,
16.7 and 19.0 (seed 0, AMD EPYC 2-core, width 64, EMA 0.999). With that many
updates a longer EMA horizon helps (0.9998: 15.6). Then width, and the
generator's is what counts: it is also the cheaper one to widen (per update
the critic runs forward and backward on real and fake images, then again on
the generator's), so a wide generator beside a width-64 critic costs fewer
updates than widening both. Width 96 for both scored 15.3 and 15.6 (seeds 0
and 1, 26,000 updates); generator 96 / critic 64, 14.1 (40,000); generator
128 / critic 64, 13.6 and 14.7 (seeds 0 and 1, 31,000-32,000 updates);
generator 160 / critic 64, 14.8 (25,000); both at 128, 16.8.
The EMA generator is what is sampled and scored, with its own standing
batch-norm statistics (recomputed before each grid and checkpoint, about 1.5
seconds each here): on the same checkpoints and latents they turn 13.6 and
14.7 into 13.3 and 14.4. A faster generator, its learning rate 3e-4 beside
the critic's 2e-4, then scored 14.0, 13.4, 13.4, 13.7, 12.9 and 13.5 (seeds
0, 0, 0, 1, 2, 3; 28,300-32,500 updates), against 13.3 and 14.4. The EMA's
decay changes nothing in a run this short: the warm-up min(decay,
(1+t)/(K+t)) stays below 0.9998 until update 45,000 and below 0.9999 until
90,000, so the average spans about the last t/9 updates (half its weight on
the last 2,200 of 31,000). On one run's snapshots (every 100 updates), K =
5, 10 and 20 (`ema_warmup`: averages about twice as long, as is, half as
long) scored 13.85, 13.35 and 13.60: the default 10 stays. Lazy R1 (gamma
0.05 on every 4th critic update) scored 12.7, 13.3, 13.7 and 13.7 (seeds 0
to 3): no gain beyond the spread, so no penalty. Channels per generator block
(`model.g_channels`) changed nothing either: 384, 256, 160 scored 13.7;
256, 256, 128 (20% more updates) 13.6; the same beside a width-80 critic
14.3 (seed 0). No DiffAugment: at 40-90
epochs the critic does not yet memorize the 10,000 faces, and translation
cost 18% of the updates and 5 FID points (27.2 with it, 22.1 without, seed
0, batch 64). The learning rates are constant, so a run stopped early
(SIGTERM after 25 minutes) is the same run, only shorter.

FID kept falling to the end of the budget (seed 4, float32: 17.1, 15.0,
13.9 and 13.3 at 14, 19, 25 and 29 minutes), so speed pays. The matmuls'
operands in bfloat16 with float32 sums (`model.matmul_inputs`, ~1.7x
faster matmuls on this AVX512-BF16 CPU) made 46,903 and 44,400 updates
instead of ~32,000 and scored 12.1 and 12.7 (seeds 0 and 1; float32: 13.4
and 13.7). On a CPU without AVX512-BF16 pass
--config.model.matmul_inputs=float32. Since main.py keeps freed host
memory across steps (facegan_jax/host_memory.py) the same recipe makes
48,000-50,000 updates: 11.8, 12.1 and 12.0 (seeds 0, 1 and 2); in an
hour the machine ran 8% slower (45,000 updates), 12.7 and 12.5 (seeds 3
and 4); later seed 0 again 12.0, seeds 5 and 6 13.6 and 13.1, seeds 7
to 9 12.4, 12.0 and 12.6 (twelve runs: mean 12.4, median 12.2).
Lookahead-minmax (`optimizer.lookahead_every=5`, alpha 0.5) scored 15.0
(seed 0): pulling both players back halfway every 5 updates slows their
progress more than it calms them.

The run stops itself after `max_train_minutes` from launch, as on SIGTERM:
checkpoint, sample grids, exit 0.
"""

from configs import default


def get_config(arg=None):
  config = default.base_config()
  config.dataset.resolution = 32
  config.max_train_minutes = 29.0  # Leaves a minute for the final checkpoint.
  config.num_train_steps = 1_000_000  # The budget, not the step count, ends it.
  config.batch_size = 16  # More updates for the same images (see above).
  config.n_critic = 1
  config.model.g_width = 128  # The generator's capacity is what counts.
  config.model.d_width = 64  # 96 (fewer updates) and 48 both scored worse.
  config.model.matmul_inputs = 'bfloat16'  # 1.4x the updates (see above).
  config.loss.name = 'non_saturating'
  config.loss.penalty = 'none'
  config.loss.label_smoothing = 0.1
  config.optimizer.name = 'adam'
  config.optimizer.g_learning_rate = 3e-4  # With the EMA below; 4e-4: 14.7.
  config.optimizer.d_learning_rate = 2e-4  # 4e-4 (TTUR) scored 15.0.
  config.optimizer.b1 = 0.5
  config.optimizer.b2 = 0.999
  config.ema_decay = 0.9999  # Not reached in 29 minutes: the warm-up decides.
  config.ema_warmup = 10.0  # Averages about the last t/9 updates; 5, 20 worse.
  config.ema_standing_stats = 200  # 3,200 latents; 600 batches scored the same.
  config.dataset.diffaugment = ''
  config.log_every = 200
  config.sample_every = 2000
  config.checkpoint_every = 2000
  return default.apply_args(config, arg)
