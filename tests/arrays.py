"""Numerics helpers shared by the layer and model tests."""

import jax
import numpy as np
import pytest


@pytest.fixture(autouse=True)
def float32_matmuls():
  """GPUs default to TF32 matmuls/convs; the comparisons assume float32.

  Autouse in every test module that imports it.
  """
  with jax.default_matmul_precision('highest'):
    yield


def normal(seed, shape, scale=1.0):
  """Host-side random numbers: jax.random would add its own compilations."""
  rng = np.random.default_rng(seed)
  return (scale * rng.standard_normal(shape)).astype(np.float32)
