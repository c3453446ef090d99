"""Step metrics summed on the device between log points.

The loop adds every step's metrics to a `MetricSummary` with a tiny jitted
function, so a logged value is the mean over the whole log interval (not the
one step that lands on a log step), and the first step whose metrics were NaN
or Inf is known exactly, all without a host sync per step: the summary
leaves the device only when the loop reads it.
"""

import functools

import flax
import jax
import jax.numpy as jnp
import numpy as np

Metrics = dict[str, jax.Array]


@flax.struct.dataclass
class MetricSummary:
  """Sums of the metrics of `count` steps.

  Attributes:
    sums: metric name -> float32 sum.
    count: steps summed (int32).
    first_nonfinite_step: the first step whose metrics held a NaN or Inf,
      -1 if none (int32).
  """
  sums: Metrics
  count: jax.Array
  first_nonfinite_step: jax.Array


def _first_nonfinite(previous: jax.Array, metrics: Metrics,
                     step: jax.Array) -> jax.Array:
  finite = jnp.all(jnp.stack([jnp.isfinite(v).all()
                              for v in metrics.values()]))
  return jnp.where((previous < 0) & ~finite, step, previous).astype(jnp.int32)


@jax.jit
def start(metrics: Metrics, step: jax.Array) -> MetricSummary:
  """A summary of one step's metrics; `step` is that step's number."""
  return MetricSummary(
      sums={k: v.astype(jnp.float32) for k, v in metrics.items()},
      count=jnp.ones((), jnp.int32),
      first_nonfinite_step=_first_nonfinite(jnp.full((), -1, jnp.int32),
                                            metrics, step))


@functools.partial(jax.jit, donate_argnums=0)
def add(summary: MetricSummary, metrics: Metrics,
        step: jax.Array) -> MetricSummary:
  """`summary` with one more step's metrics."""
  return MetricSummary(
      sums={k: summary.sums[k] + v for k, v in metrics.items()},
      count=summary.count + 1,
      first_nonfinite_step=_first_nonfinite(summary.first_nonfinite_step,
                                            metrics, step))


def accumulate(summary: MetricSummary | None, metrics: Metrics,
               step: jax.Array) -> MetricSummary:
  """Starts a summary (summary None) or adds to it; stays on the device."""
  if summary is None:
    return start(metrics, step)
  return add(summary, metrics, step)


def read(summary: MetricSummary) -> tuple[dict[str, float], int | None]:
  """Host sync (one transfer): each metric's mean over the summed steps, and
  the first step with a NaN/Inf metric (None if there was none)."""
  host = jax.device_get(summary)
  means = {k: float(np.asarray(v) / host.count) for k, v in host.sums.items()}
  step = int(host.first_nonfinite_step)
  return means, None if step < 0 else step
