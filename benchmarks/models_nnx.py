"""The W1 and W2 models for the NNX API, written once and built for plait and for Flax NNX.

``build(nnx, ...)`` defines the classes against whichever ``nnx`` namespace it is given, so
plait and Flax NNX run literally the same model code. What differs is passed in, and is
each library's documented idiom:

- ``scan_axes``: how the layer scan treats RNG state. Flax's ``Dropout`` forks its own
  stream at construction, so a stack built under ``split_rngs`` + ``vmap`` has per-layer
  streams and is scanned on axis 0. plait's ``Dropout`` keeps a reference to the caller's
  ``Rngs``, so its RNG state is carried through the layers
  (``StateAxes({RngState: Carry, ...: 0})``), as in plait's README and demo.
- ``update``: plait's ``optimizer.update(grads)``, Flax's ``optimizer.update(model, grads)``.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import maths


def build(nnx: Any, *, scan_axes: Any, update: Callable[[Any, Any, Any], None]) -> types.SimpleNamespace:
    class MLP(nnx.Module):
        def __init__(self, cfg: maths.MLPConfig, rngs: Any):
            self.layers = nnx.List([nnx.Linear(cfg.width, cfg.width, rngs=rngs) for _ in range(cfg.depth)])
            self.drops = nnx.List([nnx.Dropout(cfg.rate, rngs=rngs) for _ in range(cfg.depth)])

        def __call__(self, x, with_masks=False):
            masks = []
            for layer, drop in zip(self.layers, self.drops):
                h = drop(layer(x))
                masks.append(maths.keep_mask(h))
                x = jax.nn.relu(h)
            return x, (jnp.stack(masks) if with_masks else None)

    class LayerNorm(nnx.Module):
        def __init__(self, d: int):
            self.scale = nnx.Param(jnp.ones((d,)))
            self.bias = nnx.Param(jnp.zeros((d,)))

        def __call__(self, x):
            return maths.layer_norm(x, self.scale[...], self.bias[...])

    class Attention(nnx.Module):
        def __init__(self, cfg: maths.LMConfig, rngs: Any):
            self.qkv = nnx.Linear(cfg.d_model, 3 * cfg.d_model, rngs=rngs)
            self.out = nnx.Linear(cfg.d_model, cfg.d_model, rngs=rngs)
            self.heads = cfg.heads

        def __call__(self, x):
            return self.out(maths.causal_attention(self.qkv(x), self.heads))

    class Block(nnx.Module):
        def __init__(self, cfg: maths.LMConfig, rngs: Any):
            self.ln1 = LayerNorm(cfg.d_model)
            self.attn = Attention(cfg, rngs)
            self.drop1 = nnx.Dropout(cfg.rate, rngs=rngs)
            self.ln2 = LayerNorm(cfg.d_model)
            self.fc1 = nnx.Linear(cfg.d_model, cfg.d_mlp, rngs=rngs)
            self.fc2 = nnx.Linear(cfg.d_mlp, cfg.d_model, rngs=rngs)
            self.drop2 = nnx.Dropout(cfg.rate, rngs=rngs)

        def __call__(self, x):
            a = self.drop1(self.attn(self.ln1(x)))
            x = x + a
            x = x + self.drop2(self.fc2(jax.nn.gelu(self.fc1(self.ln2(x)))))
            return x, maths.keep_mask(a)

    class LM(nnx.Module):
        def __init__(self, cfg: maths.LMConfig, rngs: Any, stacked: bool):
            self.embed = nnx.Param(0.02 * jax.random.normal(rngs.params(), (cfg.vocab, cfg.d_model)))
            self.pos = nnx.Param(0.02 * jax.random.normal(rngs.params(), (cfg.seq, cfg.d_model)))
            if stacked:
                @nnx.split_rngs(splits=cfg.depth)
                @nnx.vmap(axis_size=cfg.depth)
                def create_blocks(rngs):
                    return Block(cfg, rngs)

                self.blocks = create_blocks(rngs)
            else:
                self.blocks = nnx.List([Block(cfg, rngs) for _ in range(cfg.depth)])
            self.ln_f = LayerNorm(cfg.d_model)
            self.head = nnx.Linear(cfg.d_model, cfg.vocab, rngs=rngs)
            self.stacked = stacked

        def __call__(self, tokens, with_masks=False):
            x = jnp.take(self.embed[...], tokens, axis=0) + self.pos[...]
            if self.stacked:
                @nnx.scan(in_axes=(nnx.Carry, scan_axes), out_axes=(nnx.Carry, 0))
                def forward(x, block):
                    x, mask = block(x)
                    return x, (mask if with_masks else None)

                x, masks = forward(x, self.blocks)
            else:
                masks = []
                for block in self.blocks:
                    x, mask = block(x)
                    masks.append(mask)
                masks = jnp.stack(masks) if with_masks else None
            return self.head(self.ln_f(x)), masks

    def train_step(loss_of_outputs: Callable, with_masks: bool) -> Callable:
        """``(model, optimizer, *data) -> loss`` (or ``(loss, masks)``), unjitted."""

        def step(model, optimizer, *data):
            def loss_fn(model):
                loss, masks = loss_of_outputs(model, with_masks, *data)
                return (loss, masks) if with_masks else loss

            out, grads = nnx.value_and_grad(loss_fn, has_aux=with_masks)(model)
            update(optimizer, model, grads)
            return out

        return step

    def mlp_loss(model, with_masks, x, y):
        out, masks = model(x, with_masks)
        return maths.mse(out, y), masks

    def lm_loss(model, with_masks, tokens):
        logits, masks = model(tokens[:, :-1], with_masks)
        return maths.lm_loss(logits, tokens[:, 1:]), masks

    return types.SimpleNamespace(
        MLP=MLP, LM=LM, Block=Block,
        mlp_step=lambda with_masks: train_step(mlp_loss, with_masks),
        lm_step=lambda with_masks: train_step(lm_loss, with_masks),
    )
