"""The workloads' sizes and the maths every library shares.

Layer norm, causal multi-head attention and the loss are written once here, as functions
of arrays. Each library's model calls them from its own module methods with its own
parameters, so the benchmark compares module systems and transforms, not layer code.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp


@dataclasses.dataclass(frozen=True)
class MLPConfig:
    """W1: an MLP of ``depth`` Linear(width, width) layers with Dropout and ReLU.

    Each layer is ``relu(dropout(linear(x)))``, the same function as ``dropout(relu(...))``,
    but with Dropout's input dense, so that its mask can be read off its output (W4).
    """

    depth: int = 8
    width: int = 32
    batch: int = 4
    rate: float = 0.1
    lr: float = 1e-3


@dataclasses.dataclass(frozen=True)
class LMConfig:
    """W2/W3: a pre-LayerNorm Transformer language model."""

    depth: int = 6
    d_model: int = 128
    heads: int = 4
    d_mlp: int = 512
    seq: int = 64
    batch: int = 8
    vocab: int = 256
    rate: float = 0.1
    lr: float = 1e-3

    def at_depth(self, depth: int) -> LMConfig:
        return dataclasses.replace(self, depth=depth)


def mlp_data(cfg: MLPConfig) -> tuple[jax.Array, jax.Array]:
    x = jax.random.normal(jax.random.key(100), (cfg.batch, cfg.width))
    y = jax.random.normal(jax.random.key(101), (cfg.batch, cfg.width))
    return x, y


def lm_data(cfg: LMConfig) -> jax.Array:
    """Token ids, shape (batch, seq + 1): inputs are ``[:, :-1]``, targets ``[:, 1:]``."""
    return jax.random.randint(jax.random.key(102), (cfg.batch, cfg.seq + 1), 0, cfg.vocab)


def mse(pred: jax.Array, y: jax.Array) -> jax.Array:
    return jnp.mean((pred - y) ** 2)


def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array, eps: float = 1e-6) -> jax.Array:
    mean = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mean), axis=-1, keepdims=True)
    return (x - mean) * jax.lax.rsqrt(var + eps) * scale + bias


def causal_attention(qkv: jax.Array, heads: int) -> jax.Array:
    """``qkv``: (..., seq, 3 * d_model), the fused query/key/value projection. Returns (..., seq, d_model)."""
    *lead, seq, three_d = qkv.shape
    d = three_d // 3
    q, k, v = jnp.split(qkv.reshape(*lead, seq, 3, heads, d // heads), 3, axis=-3)
    q, k, v = (t.squeeze(-3) for t in (q, k, v))  # (..., seq, heads, head_dim)
    logits = jnp.einsum("...qhd,...khd->...hqk", q, k) / jnp.sqrt(d // heads).astype(qkv.dtype)
    mask = jnp.tril(jnp.ones((seq, seq), bool))
    logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits, axis=-1)
    out = jnp.einsum("...hqk,...khd->...qhd", weights, v)
    return out.reshape(*lead, seq, d)


def lm_loss(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """Mean next-token cross-entropy."""
    logp = jax.nn.log_softmax(logits, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, targets[..., None], axis=-1))


def keep_mask(dropped: jax.Array) -> jax.Array:
    """Which entries a dropout kept (its input is dense, so a zero output was dropped).

    W4 reads the masks this way from the training step itself, so what is checked is the
    RNG plumbing that the timed step uses.
    """
    return dropped != 0
