"""Raw JAX: hand-written pure functions on dicts of arrays, ``jax.jit``, optax. The floor.

State (parameters, optimizer state, RNG key and counter) is returned by the jitted step
and written back by reassigning the runner's references, which is what "state written
back" costs without a module system.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import maths
import optax
from harness import Runner

NAME = "raw JAX"

_lecun = jax.nn.initializers.lecun_normal()


def _linear(key: jax.Array, n_in: int, n_out: int) -> dict:
    return {"kernel": _lecun(key, (n_in, n_out)), "bias": jnp.zeros((n_out,))}


def _apply_linear(p: dict, x: jax.Array) -> jax.Array:
    return x @ p["kernel"] + p["bias"]


def dropout(x: jax.Array, key: jax.Array, rate: float) -> jax.Array:
    keep = 1.0 - rate
    mask = jax.random.bernoulli(key, keep, x.shape)
    return jax.lax.select(mask, x / keep, jnp.zeros_like(x))


def _rng(seed: int) -> dict:
    # Raw key data (uint32) rather than a typed key: a typed key array is flattened and
    # rebuilt in Python on every jit call (about 20 calls); the floor should not pay that.
    return {"key": jax.random.key_data(jax.random.key(seed)), "count": jnp.zeros((), jnp.uint32)}


def _runner(step_fn, masks_fn, params, tx, data) -> Runner:
    state = [params, tx.init(params), _rng(1)]

    def closure(step_fn, state):
        def step():
            state[0], state[1], state[2], loss = step_fn(state[0], state[1], state[2], *data)
            return loss

        return step

    step = closure(step_fn, state)

    def masks():
        state[0], state[1], state[2], (loss, m) = masks_fn(state[0], state[1], state[2], *data)
        return m

    saved = []

    def stub(*args):
        """Stands for the compiled call: one real call, then its saved result at once."""
        if not saved:
            saved.append(step_fn(*args))
        return saved[0]

    return Runner(step, masks, len(jax.tree.leaves(state)), python_only=closure(stub, list(state)),
                  lowered=lambda: step_fn.lower(*state, *data))


def _train_step(loss_fn, tx, with_masks: bool):
    @jax.jit
    def step(params, opt_state, rng, *data):
        key = jax.random.fold_in(jax.random.wrap_key_data(rng["key"]), rng["count"])
        out, grads = jax.value_and_grad(loss_fn, has_aux=with_masks)(params, key, *data)
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return params, opt_state, {"key": rng["key"], "count": rng["count"] + 1}, out

    return step


# -- W1: MLP ----------------------------------------------------------------------------------


def mlp_params(cfg: maths.MLPConfig, seed: int = 0) -> list[dict]:
    keys = jax.random.split(jax.random.key(seed), cfg.depth)
    return [_linear(k, cfg.width, cfg.width) for k in keys]


def mlp(cfg: maths.MLPConfig) -> Runner:
    def loss_fn(params, key, x, y, with_masks=False):
        masks = []
        for i, layer in enumerate(params):
            h = dropout(_apply_linear(layer, x), jax.random.fold_in(key, i), cfg.rate)
            masks.append(maths.keep_mask(h))
            x = jax.nn.relu(h)
        loss = maths.mse(x, y)
        return (loss, jnp.stack(masks)) if with_masks else loss

    tx = optax.adam(cfg.lr)
    step = _train_step(loss_fn, tx, False)
    masks = _train_step(lambda *a: loss_fn(*a, with_masks=True), tx, True)
    return _runner(step, masks, mlp_params(cfg), tx, maths.mlp_data(cfg))


# -- W2/W3: Transformer LM --------------------------------------------------------------------


def _block_params(key: jax.Array, cfg: maths.LMConfig) -> dict:
    k = jax.random.split(key, 4)
    d = cfg.d_model
    ln = {"scale": jnp.ones((d,)), "bias": jnp.zeros((d,))}
    return {
        "ln1": ln, "ln2": dict(ln),
        "attn": {"qkv": _linear(k[0], d, 3 * d), "out": _linear(k[1], d, d)},
        "fc1": _linear(k[2], d, cfg.d_mlp), "fc2": _linear(k[3], cfg.d_mlp, d),
    }


def lm_params(cfg: maths.LMConfig, stacked: bool, seed: int = 0) -> dict:
    """Built under one jit for a stack (vmap of eager ops would compile each op for the
    stacked shapes), eagerly for a list (each op's compilation is reused by every layer)."""
    return _lm_params_jit(cfg, True, seed) if stacked else _lm_params(cfg, False, seed)


def _lm_params(cfg: maths.LMConfig, stacked: bool, seed: int = 0) -> dict:
    k_embed, k_pos, k_head, k_blocks = jax.random.split(jax.random.key(seed), 4)
    keys = jax.random.split(k_blocks, cfg.depth)
    if stacked:
        blocks = jax.vmap(lambda k: _block_params(k, cfg))(keys)
    else:
        blocks = [_block_params(k, cfg) for k in keys]
    return {
        "embed": 0.02 * jax.random.normal(k_embed, (cfg.vocab, cfg.d_model)),
        "pos": 0.02 * jax.random.normal(k_pos, (cfg.seq, cfg.d_model)),
        "blocks": blocks,
        "ln_f": {"scale": jnp.ones((cfg.d_model,)), "bias": jnp.zeros((cfg.d_model,))},
        "head": _linear(k_head, cfg.d_model, cfg.vocab),
    }


_lm_params_jit = jax.jit(_lm_params, static_argnums=(0, 1, 2))


def _block(p: dict, x: jax.Array, key: jax.Array, cfg: maths.LMConfig) -> tuple[jax.Array, jax.Array]:
    h = maths.layer_norm(x, p["ln1"]["scale"], p["ln1"]["bias"])
    a = _apply_linear(p["attn"]["out"], maths.causal_attention(_apply_linear(p["attn"]["qkv"], h), cfg.heads))
    a = dropout(a, jax.random.fold_in(key, 0), cfg.rate)
    x = x + a
    h = maths.layer_norm(x, p["ln2"]["scale"], p["ln2"]["bias"])
    m = _apply_linear(p["fc2"], jax.nn.gelu(_apply_linear(p["fc1"], h)))
    x = x + dropout(m, jax.random.fold_in(key, 1), cfg.rate)
    return x, maths.keep_mask(a)


def lm_forward(params: dict, tokens: jax.Array, key: jax.Array, cfg: maths.LMConfig, stacked: bool, with_masks: bool = False):
    x = jnp.take(params["embed"], tokens, axis=0) + params["pos"]
    keys = jax.random.split(key, cfg.depth)
    if stacked:
        def body(x, layer):
            p, k = layer
            x, mask = _block(p, x, k, cfg)
            return x, (mask if with_masks else None)

        x, masks = jax.lax.scan(body, x, (params["blocks"], keys))
    else:
        masks = []
        for p, k in zip(params["blocks"], keys):
            x, mask = _block(p, x, k, cfg)
            masks.append(mask)
        masks = jnp.stack(masks) if with_masks else None
    x = maths.layer_norm(x, params["ln_f"]["scale"], params["ln_f"]["bias"])
    return _apply_linear(params["head"], x), masks


def lm(cfg: maths.LMConfig, stacked: bool = True) -> Runner:
    def loss_fn(params, key, tokens, with_masks=False):
        logits, masks = lm_forward(params, tokens[:, :-1], key, cfg, stacked, with_masks)
        loss = maths.lm_loss(logits, tokens[:, 1:])
        return (loss, masks) if with_masks else loss

    tx = optax.adam(cfg.lr)
    step = _train_step(loss_fn, tx, False)
    masks = _train_step(lambda *a: loss_fn(*a, with_masks=True), tx, True)
    return _runner(step, masks, lm_params(cfg, stacked), tx, (maths.lm_data(cfg),))


def graph_ops(params: dict) -> dict:
    """W3's floor: ``jax.tree.flatten``/``unflatten`` of the model's parameter dict."""
    leaves, treedef = jax.tree.flatten(params)
    return {
        "flatten": lambda: jax.tree.flatten(params),
        "unflatten": lambda: jax.tree.unflatten(treedef, leaves),
    }
