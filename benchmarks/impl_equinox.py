"""Equinox: ``eqx.Module`` pytrees, ``eqx.nn.Linear``/``eqx.nn.Dropout``, ``eqx.filter_jit``.

Randomness is explicit keys: the step folds a counter into a base key, and splits one key
per layer. ``eqx.nn.Linear`` maps one vector, so it is ``vmap``-ed over the leading axes
(Equinox's idiom for batch dimensions). The layer stack is built with ``eqx.filter_vmap``
and applied with ``jax.lax.scan`` over its array leaves (``eqx.partition``/``eqx.combine``),
as in Equinox's documentation.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import maths
import optax
from harness import Runner

NAME = "Equinox"


def _dense(linear: eqx.nn.Linear, x: jax.Array) -> jax.Array:
    """Apply a one-vector ``eqx.nn.Linear`` over every leading axis of ``x``."""
    f = linear
    for _ in range(x.ndim - 1):
        f = jax.vmap(f)
    return f(x)


class MLP(eqx.Module):
    layers: list
    drops: list

    def __init__(self, cfg: maths.MLPConfig, key: jax.Array):
        keys = jax.random.split(key, cfg.depth)
        self.layers = [eqx.nn.Linear(cfg.width, cfg.width, key=k) for k in keys]
        self.drops = [eqx.nn.Dropout(cfg.rate) for _ in keys]

    def __call__(self, x, key, with_masks=False):
        masks = []
        for layer, drop, k in zip(self.layers, self.drops, jax.random.split(key, len(self.layers))):
            h = drop(_dense(layer, x), key=k)
            masks.append(maths.keep_mask(h))
            x = jax.nn.relu(h)
        return x, (jnp.stack(masks) if with_masks else None)


class LayerNorm(eqx.Module):
    scale: jax.Array
    bias: jax.Array

    def __init__(self, d: int):
        self.scale = jnp.ones((d,))
        self.bias = jnp.zeros((d,))

    def __call__(self, x):
        return maths.layer_norm(x, self.scale, self.bias)


class Attention(eqx.Module):
    qkv: eqx.nn.Linear
    out: eqx.nn.Linear
    heads: int = eqx.field(static=True)

    def __init__(self, cfg: maths.LMConfig, key: jax.Array):
        k1, k2 = jax.random.split(key)
        self.qkv = eqx.nn.Linear(cfg.d_model, 3 * cfg.d_model, key=k1)
        self.out = eqx.nn.Linear(cfg.d_model, cfg.d_model, key=k2)
        self.heads = cfg.heads

    def __call__(self, x):
        return _dense(self.out, maths.causal_attention(_dense(self.qkv, x), self.heads))


class Block(eqx.Module):
    ln1: LayerNorm
    attn: Attention
    drop1: eqx.nn.Dropout
    ln2: LayerNorm
    fc1: eqx.nn.Linear
    fc2: eqx.nn.Linear
    drop2: eqx.nn.Dropout

    def __init__(self, cfg: maths.LMConfig, key: jax.Array):
        k1, k2, k3 = jax.random.split(key, 3)
        self.ln1 = LayerNorm(cfg.d_model)
        self.attn = Attention(cfg, k1)
        self.drop1 = eqx.nn.Dropout(cfg.rate)
        self.ln2 = LayerNorm(cfg.d_model)
        self.fc1 = eqx.nn.Linear(cfg.d_model, cfg.d_mlp, key=k2)
        self.fc2 = eqx.nn.Linear(cfg.d_mlp, cfg.d_model, key=k3)
        self.drop2 = eqx.nn.Dropout(cfg.rate)

    def __call__(self, x, key):
        k1, k2 = jax.random.split(key)
        a = self.drop1(self.attn(self.ln1(x)), key=k1)
        x = x + a
        x = x + self.drop2(_dense(self.fc2, jax.nn.gelu(_dense(self.fc1, self.ln2(x)))), key=k2)
        return x, maths.keep_mask(a)


class LM(eqx.Module):
    embed: jax.Array
    pos: jax.Array
    blocks: Block | list
    ln_f: LayerNorm
    head: eqx.nn.Linear
    depth: int = eqx.field(static=True)
    stacked: bool = eqx.field(static=True)

    def __init__(self, cfg: maths.LMConfig, key: jax.Array, stacked: bool):
        k_embed, k_pos, k_head, k_blocks = jax.random.split(key, 4)
        self.embed = 0.02 * jax.random.normal(k_embed, (cfg.vocab, cfg.d_model))
        self.pos = 0.02 * jax.random.normal(k_pos, (cfg.seq, cfg.d_model))
        keys = jax.random.split(k_blocks, cfg.depth)
        if stacked:
            self.blocks = eqx.filter_vmap(lambda k: Block(cfg, k))(keys)
        else:
            self.blocks = [Block(cfg, k) for k in keys]
        self.ln_f = LayerNorm(cfg.d_model)
        self.head = eqx.nn.Linear(cfg.d_model, cfg.vocab, key=k_head)
        self.depth = cfg.depth
        self.stacked = stacked

    def __call__(self, tokens, key, with_masks=False):
        x = jnp.take(self.embed, tokens, axis=0) + self.pos
        keys = jax.random.split(key, self.depth)
        if self.stacked:
            params, static = eqx.partition(self.blocks, eqx.is_array)

            def body(x, layer):
                p, k = layer
                x, mask = eqx.combine(p, static)(x, k)
                return x, (mask if with_masks else None)

            x, masks = jax.lax.scan(body, x, (params, keys))
        else:
            masks = []
            for block, k in zip(self.blocks, keys):
                x, mask = block(x, k)
                masks.append(mask)
            masks = jnp.stack(masks) if with_masks else None
        return _dense(self.head, self.ln_f(x)), masks


def _train_step(loss_of_outputs, tx, with_masks: bool):
    @eqx.filter_jit
    def step(model, opt_state, rng, *data):
        key = jax.random.fold_in(rng["key"], rng["count"])

        def loss_fn(model):
            loss, masks = loss_of_outputs(model, key, with_masks, *data)
            return (loss, masks) if with_masks else loss

        out, grads = eqx.filter_value_and_grad(loss_fn, has_aux=with_masks)(model)
        updates, opt_state = tx.update(grads, opt_state, eqx.filter(model, eqx.is_inexact_array))
        model = eqx.apply_updates(model, updates)
        return model, opt_state, {"key": rng["key"], "count": rng["count"] + 1}, out

    return step


def _runner(model, lr: float, loss_of_outputs, data) -> Runner:
    tx = optax.adam(lr)
    state = [model, tx.init(eqx.filter(model, eqx.is_inexact_array)),
             {"key": jax.random.key(1), "count": jnp.zeros((), jnp.uint32)}]
    step_fn, masks_fn = _train_step(loss_of_outputs, tx, False), _train_step(loss_of_outputs, tx, True)

    def step():
        state[0], state[1], state[2], loss = step_fn(state[0], state[1], state[2], *data)
        return loss

    def masks():
        state[0], state[1], state[2], (loss, m) = masks_fn(state[0], state[1], state[2], *data)
        return m

    return Runner(step, masks, len(jax.tree.leaves(eqx.filter(state, eqx.is_array))),
                  lowered=lambda: step_fn.lower(*state, *data))


def mlp(cfg: maths.MLPConfig) -> Runner:
    def loss_of_outputs(model, key, with_masks, x, y):
        out, masks = model(x, key, with_masks)
        return maths.mse(out, y), masks

    return _runner(MLP(cfg, jax.random.key(0)), cfg.lr, loss_of_outputs, maths.mlp_data(cfg))


def lm_model(cfg: maths.LMConfig, stacked: bool) -> LM:
    """Built under filter_jit for a stack (one compilation instead of many eager ops for the
    stacked shapes), eagerly for a list (each op's compilation is reused by every layer)."""
    return (eqx.filter_jit(LM) if stacked else LM)(cfg, jax.random.key(0), stacked)


def lm(cfg: maths.LMConfig, stacked: bool = True) -> Runner:
    def loss_of_outputs(model, key, with_masks, tokens):
        logits, masks = model(tokens[:, :-1], key, with_masks)
        return maths.lm_loss(logits, tokens[:, 1:]), masks

    return _runner(lm_model(cfg, stacked), cfg.lr, loss_of_outputs, (maths.lm_data(cfg),))


def graph_ops(model) -> dict:
    """Equinox's nearest equivalents: ``partition``/``combine``/``filter``; modules are immutable."""
    params, static = eqx.partition(model, eqx.is_array)
    return {
        "split": lambda: eqx.partition(model, eqx.is_array),
        "merge": lambda: eqx.combine(params, static),
        "state": lambda: eqx.filter(model, eqx.is_array),
    }
