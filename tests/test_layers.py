"""The fast layers compute the same function as the XLA/flax reference.

Values, input gradients, parameter gradients and the second-order gradient
the WGAN-GP penalty takes (parameters of a function of the input gradient)
are compared at several shapes, strides, paddings and channel counts, in
float32, and the fast layers' optimized HLO is checked for convolutions.
"""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from facegan_jax.models import conv
from facegan_jax.models import downsample
from facegan_jax.models import upsample
from tests.arrays import float32_matmuls  # pylint: disable=unused-import
from tests.arrays import normal as _normal


# XLA:CPU's LLVM optimizations cost seconds per second-order graph and buy
# nothing at these sizes; the HLO-level passes (what the HLO test inspects)
# still run.
_jit = functools.partial(
    jax.jit, compiler_options={'xla_backend_optimization_level': 0})


def _random_variables(init_fn, x, seed=1):
  """Variables shaped as init_fn makes them, with random kernels AND biases.

  Non-zero biases, so that the bias path is compared too.
  """
  shapes = jax.eval_shape(init_fn, jax.random.key(0), x)
  leaves, treedef = jax.tree.flatten(shapes)
  return jax.tree.unflatten(treedef, [
      _normal(seed + i, leaf.shape,
              1 / np.sqrt(np.prod(leaf.shape[:-1])) if leaf.ndim > 1 else 0.1)
      for i, leaf in enumerate(leaves)])


def _derivatives(apply_fn, variables, x):
  """Value, input grad, param grad and penalty grad of a smooth loss.

  tanh keeps the loss smooth, so tiny rounding differences between the two
  implementations cannot flip a kink (as LeakyReLU's would) and the
  comparison stays tight.
  """
  y = apply_fn(variables, x)
  weights = _normal(99, y.shape)  # Host constant: the same in both graphs.

  def loss(variables, x):
    return jnp.sum(jnp.tanh(apply_fn(variables, x)) * weights)

  def penalty(variables):
    grad_x = jax.grad(loss, argnums=1)(variables, x)
    norms = jnp.sqrt(jnp.sum(grad_x.reshape(x.shape[0], -1) ** 2, axis=1))
    return jnp.mean((norms - 1.0) ** 2)

  return (y, jax.grad(loss, argnums=1)(variables, x),
          jax.grad(loss)(variables, x), jax.grad(penalty)(variables))


def _check_layer(fast_layer, xla_layer, reference_init, reference_apply, x):
  """Asserts fast == reference (4 derivatives) and xla == reference (value).

  Everything runs in one compiled function: op-by-op (eager) execution
  compiles every primitive separately and costs far more on this CPU.
  """

  @_jit
  def run(variables, x):
    return (_derivatives(fast_layer.apply, variables, x),
            _derivatives(reference_apply, variables, x),
            xla_layer.apply(variables, x))

  fast, reference, xla_value = run(_random_variables(reference_init, x), x)
  np.testing.assert_allclose(xla_value, reference[0], rtol=0, atol=1e-5)
  names = ('value', 'input gradient', 'parameter gradient',
           'penalty gradient')
  for name, got, want in zip(names, fast, reference):
    for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      scale = float(jnp.max(jnp.abs(w)))
      assert scale > 0, name  # A vacuous comparison would prove nothing.
      np.testing.assert_allclose(g, w, rtol=0, atol=2e-5 * scale,
                                 err_msg=name)


# (H, W, Cin, Cout, kernel, strides, padding)
CONV_CASES = [
    (8, 8, 3, 5, (4, 4), (2, 2), ((1, 1), (1, 1))),  # DCGAN critic block.
    (9, 7, 2, 4, (3, 3), (1, 1), 'SAME'),
    (9, 7, 2, 3, (3, 3), (2, 2), 'SAME'),  # Odd sizes, stride 2.
    (10, 10, 3, 2, (5, 3), (3, 2), 'VALID'),  # Kernel not a stride multiple.
    (4, 4, 6, 1, (4, 4), (1, 1), 'VALID'),  # DCGAN score layer.
    (7, 9, 3, 3, (3, 3), (2, 1), 2),  # Int padding, mixed strides.
    (6, 6, 4, 4, (1, 1), (1, 1), 'SAME'),  # Pointwise.
]


@pytest.mark.parametrize('h,w,cin,cout,kernel_size,strides,padding',
                         CONV_CASES)
def test_conv_matches_flax_conv(h, w, cin, cout, kernel_size, strides,
                                padding):
  reference = nn.Conv(cout, kernel_size, strides, padding)
  _check_layer(
      conv.Conv(cout, kernel_size, strides, padding, impl='fast'),
      conv.Conv(cout, kernel_size, strides, padding, impl='xla'),
      reference.init, reference.apply, _normal(0, (2, h, w, cin)))


# (H, W, Cin, Cout, kernel, strides)
CONV_TRANSPOSE_CASES = [
    (3, 5, 4, 3, (4, 4), (2, 2)),  # DCGAN generator block.
    (3, 3, 2, 2, (5, 2), (2, 3)),
    (3, 3, 2, 2, (3, 3), (1, 1)),
]


@pytest.mark.parametrize('h,w,cin,cout,kernel_size,strides',
                         CONV_TRANSPOSE_CASES)
def test_conv_transpose_matches_flax_conv_transpose(h, w, cin, cout,
                                                    kernel_size, strides):
  reference = nn.ConvTranspose(cout, kernel_size, strides, padding='SAME')
  fast = upsample.ConvTranspose(cout, kernel_size, strides, impl='fast')
  x = _normal(0, (2, h, w, cin))
  output_shape = jax.eval_shape(fast.init_with_output, jax.random.key(0),
                                x)[0].shape
  assert output_shape == (2, h * strides[0], w * strides[1], cout)
  _check_layer(fast,
               upsample.ConvTranspose(cout, kernel_size, strides, impl='xla'),
               reference.init, reference.apply, x)


def test_conv_transpose_is_pytorch_conv_transpose_with_flipped_kernel():
  # PyTorch ConvTranspose2d(Cin, Cout, 4, 2, 1) is the adjoint of Conv2d(
  # Cout, Cin, 4, 2, 1) sharing weight w [Cin, Cout, 4, 4]; the module
  # docstring's mapping to our kernel must give the same function.
  @_jit
  def run(x, torch_weight):
    forward_conv_kernel = torch_weight.transpose(2, 3, 1, 0)  # HWIO: 2 -> 5.
    _, adjoint = jax.vjp(
        lambda u: conv.conv2d_xla(u, forward_conv_kernel, (2, 2),
                                  ((1, 1), (1, 1))),
        jnp.zeros((2, 6, 8, 2)))
    (torch_output,) = adjoint(x)
    kernel = torch_weight.transpose(2, 3, 0, 1)[::-1, ::-1]
    return upsample.conv_transpose_fast(x, kernel, (2, 2)), torch_output

  ours, torch_output = run(_normal(0, (2, 3, 4, 5)), _normal(1, (5, 2, 4, 4)))
  np.testing.assert_allclose(ours, torch_output, atol=1e-5)


@pytest.mark.parametrize('h,w,cin,cout,kernel_size', [
    (3, 5, 3, 4, (3, 3)),  # ResNet generator block.
    (4, 4, 2, 2, (5, 1)),
    (3, 3, 4, 2, (1, 1)),  # ResNet shortcut.
])
def test_upsample_conv_matches_upsample_then_flax_conv(h, w, cin, cout,
                                                       kernel_size):
  reference_conv = nn.Conv(cout, kernel_size, padding='SAME')

  def reference(variables, x):
    x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
    return reference_conv.apply(variables, x)

  _check_layer(upsample.UpsampleConv(cout, kernel_size, impl='fast'),
               upsample.UpsampleConv(cout, kernel_size, impl='xla'),
               reference_conv.init, reference, _normal(0, (2, h, w, cin)))


@pytest.mark.parametrize('h,w,cin,cout,kernel_size', [
    (6, 4, 3, 4, (3, 3)),  # ResNet critic block.
    (8, 8, 2, 2, (5, 3)),
    (4, 4, 4, 2, (1, 1)),  # ResNet shortcut.
])
def test_conv_mean_pool_matches_flax_conv_then_avg_pool(h, w, cin, cout,
                                                        kernel_size):
  reference_conv = nn.Conv(cout, kernel_size, padding='SAME')

  def reference(variables, x):
    return nn.avg_pool(reference_conv.apply(variables, x), (2, 2), (2, 2))

  _check_layer(downsample.ConvMeanPool(cout, kernel_size, impl='fast'),
               downsample.ConvMeanPool(cout, kernel_size, impl='xla'),
               reference_conv.init, reference, _normal(0, (2, h, w, cin)))


def test_pixel_matmul_derivatives_are_those_of_dot():
  x, kernel = _normal(0, (2, 3, 5, 4)), _normal(1, (4, 6))
  target = _normal(2, (2, 3, 5, 6))

  def penalty(fn, kernel, x):
    # A function of the input gradient, differentiated w.r.t. the kernel:
    # the order the gradient penalty takes.
    grad_x = jax.grad(lambda x: jnp.vdot(jnp.tanh(fn(x, kernel)), target))(x)
    return jnp.sum(jnp.square(grad_x)) + jnp.vdot(fn(x, kernel), target)

  @_jit
  def derivatives(x, kernel):
    return [jax.grad(functools.partial(penalty, fn), argnums=(0, 1))(kernel, x)
            for fn in (conv.pixel_matmul, jnp.dot)]

  fast, reference = derivatives(x, kernel)
  for a, b in zip(fast, reference):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


# The backward pass copies whichever transposed operands are smaller: the
# kernel and the pixels (many pixels), or the cotangent and the product
# (few pixels: the input gradient; few outputs: the kernel gradient).
@pytest.mark.parametrize('x_shape,outputs', [((2, 3, 5, 16), 24),
                                             ((1, 1, 2, 16), 24),
                                             ((2, 3, 5, 16), 2)])
def test_pixel_matmul_bf16_inputs_rounds_operands_and_sums_in_float32(
    x_shape, outputs):
  x, kernel = _normal(0, x_shape), _normal(1, (16, outputs))
  cotangent = _normal(2, (*x_shape[:3], outputs))

  @_jit
  def value_and_derivatives(x, kernel, cotangent):
    y, vjp = jax.vjp(
        lambda x, k: conv.pixel_matmul(x, k, conv.BF16_INPUTS), x, kernel)
    return (y, *vjp(cotangent))

  def rounded(a):
    return a.astype(jnp.bfloat16).astype(jnp.float32)

  # Products of bfloat16 numbers are exact in float32: only the order of
  # the float32 sums may differ from this reference.
  exact = functools.partial(jnp.dot, precision=jax.lax.Precision.HIGHEST)
  expected = (exact(rounded(x), rounded(kernel)),
              exact(rounded(cotangent), rounded(kernel).T),
              exact(rounded(x).reshape(-1, 16).T,
                    rounded(cotangent).reshape(-1, outputs)))
  results = value_and_derivatives(x, kernel, cotangent)
  for got, want in zip(results, expected):
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
  assert not np.allclose(results[0], exact(x, kernel), rtol=1e-5, atol=1e-5)


def test_space_to_depth_round_trip_and_layout():
  x = _normal(0, (2, 4, 6, 3))
  folded = conv.space_to_depth(x, (2, 2))
  assert folded.shape == (2, 2, 3, 12)
  # Channel block (row 1, column 0) of output pixel (1, 2) is input (3, 4).
  np.testing.assert_array_equal(folded[:, 1, 2, 6:9], x[:, 3, 4, :])
  np.testing.assert_array_equal(conv.depth_to_space(folded, (2, 2)), x)


@pytest.mark.skipif(jax.default_backend() != 'cpu',
                    reason='inspects the XLA:CPU lowering')
@pytest.mark.parametrize('impl', ['fast', 'xla'])
def test_penalty_gradient_hlo_has_convolutions_only_for_xla(impl):
  """The point of the fast layers: XLA:CPU gets only slices and matmuls.

  The 'xla' run is the control: it shows the check can see convolutions.
  """
  make_layers = [
      lambda: conv.Conv(4, (4, 4), (2, 2), ((1, 1), (1, 1)), impl=impl),
      lambda: downsample.ConvMeanPool(4, (3, 3), impl=impl),
      lambda: upsample.UpsampleConv(4, (3, 3), impl=impl),
      lambda: upsample.ConvTranspose(2, (4, 4), (2, 2), impl=impl),
  ]

  class Stack(nn.Module):

    @nn.compact
    def __call__(self, x):
      for make_layer in make_layers:
        x = jnp.tanh(make_layer()(x))
      return x

  x = _normal(0, (2, 8, 8, 3))
  variables = jax.eval_shape(Stack().init, jax.random.key(1), x)
  penalty_grad = _jit(lambda v, x: _derivatives(Stack().apply, v, x)[3])
  hlo = penalty_grad.lower(variables, x).compile().as_text()
  if impl == 'fast':
    assert 'dot(' in hlo
    assert 'convolution(' not in hlo  # Not even a well-behaved one.
  else:
    assert 'rhs_reversal' in hlo  # The slow second-order convolution.


def test_bfloat16_compute_keeps_float32_params():
  layers = (conv.Conv(2), upsample.ConvTranspose(2), upsample.UpsampleConv(2),
            downsample.ConvMeanPool(2))
  x = _normal(0, (2, 4, 4, 3))
  for layer in layers:
    # The parameters the bfloat16 layer itself creates.
    created = jax.eval_shape(layer.clone(dtype=jnp.bfloat16).init,
                             jax.random.key(0), x)
    dtypes = {p.dtype for p in jax.tree.leaves(created)}
    assert dtypes == {jnp.dtype(jnp.float32)}, (type(layer).__name__, dtypes)

  all_variables = [_random_variables(layer.init, x) for layer in layers]

  @_jit
  def run(all_variables, x):
    return [(layer.clone(dtype=jnp.bfloat16).apply(variables, x),
             layer.apply(variables, x))
            for layer, variables in zip(layers, all_variables)]

  for y, reference in run(all_variables, x):
    assert y.dtype == jnp.bfloat16
    np.testing.assert_allclose(y.astype(jnp.float32), reference, atol=0.05,
                               rtol=0.05)


def test_bad_arguments_raise_value_error_with_choices():
  x = jnp.zeros((1, 4, 4, 2))
  with pytest.raises(ValueError, match=r"impl='cudnn'.*fast, xla"):
    conv.Conv(2, impl='cudnn').init(jax.random.key(0), x)
  with pytest.raises(ValueError, match="padding='FULL'.*SAME, VALID"):
    conv.conv2d_fast(x, jnp.zeros((3, 3, 2, 2)), padding='FULL')
  with pytest.raises(ValueError, match='no output pixels'):
    conv.conv2d_fast(x, jnp.zeros((5, 5, 2, 2)), padding='VALID')
  with pytest.raises(ValueError, match='must be odd'):
    upsample.UpsampleConv(2, (2, 2)).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match='must be odd'):
    downsample.ConvMeanPool(2, (4, 4)).init(jax.random.key(0), x)
  with pytest.raises(ValueError, match='even height and width'):
    downsample.mean_pool(jnp.zeros((1, 3, 4, 2)))
