"""facegan-jax: GAN training on face images with JAX/Flax."""

__version__ = '0.1.0'
