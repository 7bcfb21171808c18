"""Attention: ``dot_product_attention``, mask helpers and ``MultiHeadAttention``.

Shapes follow one convention throughout: queries are ``[batch..., q_length, heads, depth]``,
keys and values ``[batch..., kv_length, heads, depth]``, attention weights
``[batch..., heads, q_length, kv_length]``. A mask is broadcastable to the weights' shape
and is ``True`` (or non-zero) where a query may attend to a key.

``MultiHeadAttention`` projects its inputs to queries, keys and values, attends, and
projects back. It can use fewer key/value heads than query heads (grouped-query
attention, ``num_kv_heads``), and it can decode autoregressively one token at a time from
a cache made by :meth:`MultiHeadAttention.init_cache`. Its dropout draws from the
``dropout`` stream of the :class:`~plait.Rngs` it was given, which it keeps a reference to,
as :class:`~plait.Dropout` does.

Example:
    >>> import jax.numpy as jnp, plait as nnx
    >>> x = jnp.ones((2, 4, 8))                                   # (batch, length, features)
    >>> mha = nnx.MultiHeadAttention(num_heads=2, in_features=8, rngs=nnx.Rngs(0))
    >>> mha(x, mask=nnx.make_causal_mask(jnp.ones((2, 4)))).shape
    (2, 4, 8)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from .. import initializers
from ..errors import LayerError, RngError
from ..module import Module
from ..rngs import Rngs, RngStream
from ..variables import Cache, Intermediate
from .linear import NO_METADATA, LinearGeneral, check_rngs
from .linear import promote_dtype as default_promote_dtype
from .normalization import LayerNorm

__all__ = [
    "MultiHeadAttention",
    "dot_product_attention",
    "dot_product_attention_weights",
    "make_attention_mask",
    "make_causal_mask",
    "combine_masks",
]

default_kernel_init = initializers.lecun_normal()
default_bias_init = initializers.zeros


# =======================================================================================
# The functions
# =======================================================================================


def _check_qk(query: jax.Array, key: jax.Array, what: str) -> None:
    q, k = jnp.shape(query), jnp.shape(key)
    if len(q) < 3 or len(q) != len(k) or q[:-3] != k[:-3] or q[-2:] != k[-2:]:
        raise LayerError(
            f"{what}: query has shape {q} and key has shape {k}; expected query "
            "[batch..., q_length, heads, depth] and key [batch..., kv_length, heads, depth] "
            "with the same batch dimensions, heads and depth"
        )


def _broadcasts_to(shape: tuple, target: tuple) -> bool:
    if len(shape) > len(target):
        return False
    return all(a in (1, b) for a, b in zip(reversed(shape), reversed(target)))


def _check_broadcasts(x: Any, weights_shape: tuple, what: str, name: str) -> None:
    """A mask or bias must broadcast to the weights ``[batch..., heads, q_length, kv_length]``."""
    shape, weights_shape = tuple(jnp.shape(x)), tuple(weights_shape)
    if not _broadcasts_to(shape, weights_shape):
        *batch, heads, q_length, kv_length = weights_shape
        raise LayerError(
            f"{what}: {name} has shape {shape}, which does not broadcast to the attention weights' shape "
            f"{weights_shape} = [batch..., heads, q_length, kv_length] (batch {tuple(batch)}, {heads} heads, "
            f"{q_length} queries, {kv_length} keys).\n"
            f"Give a {name} of shape {weights_shape}, or with size-1 axes to share it, e.g. "
            f"{(*batch, 1, q_length, kv_length)} for every head; nnx.make_attention_mask and "
            "nnx.make_causal_mask build this layout."
        )


def dot_product_attention_weights(
    query: jax.Array,
    key: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    broadcast_dropout: bool = True,
    dropout_rng: jax.Array | None = None,
    dropout_rate: float = 0.0,
    deterministic: bool = False,
    dtype: Any = None,
    precision: Any = None,
    module: Module | None = None,
    promote_dtype: Callable[..., Any] = default_promote_dtype,
    is_causal: bool = False,
) -> jax.Array:
    """The attention weights ``softmax(q k^T / sqrt(depth) + bias)``, masked and dropped out.

    Returns ``[batch..., heads, q_length, kv_length]``. Where ``mask`` is false the logit is
    set to the dtype's lowest value before the softmax. ``is_causal=True`` also masks every
    key after the query's position (query ``i`` sees keys ``0..i``, counted from the
    start of both sequences, as ``jax.nn.dot_product_attention`` does). Dropout (unless ``deterministic``
    or ``dropout_rate == 0``) needs ``dropout_rng``, a key; ``broadcast_dropout`` shares one
    mask across the batch and head axes. Given ``module``, the weights (before dropout) are
    sown on it (``module.sow``): ``module.attention_weights`` is an ``nnx.Intermediate``
    holding a tuple with the weights of each call.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> q = k = jnp.ones((3, 2, 4))                 # (length, heads, depth)
        >>> w = nnx.dot_product_attention_weights(q, k)
        >>> w.shape, w[0, 0].tolist()
        ((2, 3, 3), [0.3333333432674408, 0.3333333432674408, 0.3333333432674408])
    """
    _check_qk(query, key, "dot_product_attention_weights")
    query, key = promote_dtype((query, key), dtype=dtype)
    dtype = query.dtype
    depth = query.shape[-1]
    query = query / jnp.sqrt(jnp.asarray(depth, dtype))
    logits = jnp.einsum("...qhd,...khd->...hqk", query, key, precision=precision)
    if bias is not None:
        _check_broadcasts(bias, logits.shape, "dot_product_attention", "bias")
        logits = logits + bias
    if mask is not None:
        _check_broadcasts(mask, logits.shape, "dot_product_attention", "mask")
    if is_causal:
        q_length, kv_length = logits.shape[-2:]
        causal = jnp.tril(jnp.ones((q_length, kv_length), jnp.bool_))
        mask = causal if mask is None else jnp.logical_and(mask, causal)
    if mask is not None:
        logits = jnp.where(mask, logits, jnp.finfo(logits.dtype).min)
    weights = jax.nn.softmax(logits).astype(dtype)

    if module is not None:
        module.sow(Intermediate, "attention_weights", weights)

    if not deterministic and dropout_rate > 0.0:
        if dropout_rng is None:
            raise RngError(
                f"dot_product_attention: dropout_rate={dropout_rate} needs dropout_rng, a key; got None.\n"
                "Pass dropout_rng=rngs.dropout(), or deterministic=True to turn dropout off."
            )
        keep = 1.0 - dropout_rate
        if broadcast_dropout:  # one mask for every batch element and head
            shape = (1,) * (weights.ndim - 2) + weights.shape[-2:]
        else:
            shape = weights.shape
        kept = jax.random.bernoulli(dropout_rng, keep, shape)
        weights = weights * (kept.astype(dtype) / jnp.asarray(keep, dtype))
    return weights


def dot_product_attention(
    query: jax.Array,
    key: jax.Array,
    value: jax.Array,
    bias: jax.Array | None = None,
    mask: jax.Array | None = None,
    broadcast_dropout: bool = True,
    dropout_rng: jax.Array | None = None,
    dropout_rate: float = 0.0,
    deterministic: bool = False,
    dtype: Any = None,
    precision: Any = None,
    module: Module | None = None,
    promote_dtype: Callable[..., Any] = default_promote_dtype,
    is_causal: bool = False,
) -> jax.Array:
    """Attention: the values weighted by :func:`dot_product_attention_weights`.

    ``query`` is ``[batch..., q_length, heads, depth]``, ``key`` and ``value``
    ``[batch..., kv_length, heads, depth]`` (the value depth may differ); the result is
    ``[batch..., q_length, heads, value_depth]``. The other arguments are those of
    :func:`dot_product_attention_weights`. Without ``dtype`` the inputs are promoted together.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> q, k = jnp.ones((4, 1, 2)), jnp.ones((4, 1, 2))
        >>> v = jnp.arange(4.0).reshape(4, 1, 1)
        >>> causal = nnx.make_causal_mask(jnp.ones(4))   # query i sees keys 0..i
        >>> nnx.dot_product_attention(q, k, v, mask=causal)[:, 0, 0].tolist()
        [0.0, 0.5, 1.0, 1.5]
    """
    _check_qk(query, key, "dot_product_attention")
    k, v = jnp.shape(key), jnp.shape(value)
    if len(v) != len(k) or v[:-1] != k[:-1]:
        raise LayerError(
            f"dot_product_attention: key has shape {k} and value has shape {v}; expected the same "
            "[batch..., kv_length, heads] (only the last axis, the depth, may differ)"
        )
    query, key, value = promote_dtype((query, key, value), dtype=dtype)
    weights = dot_product_attention_weights(
        query, key, bias, mask, broadcast_dropout, dropout_rng, dropout_rate, deterministic, query.dtype, precision,
        module, promote_dtype, is_causal,
    )
    return jnp.einsum("...hqk,...khd->...qhd", weights, value, precision=precision)


def make_attention_mask(
    query_input: jax.Array,
    key_input: jax.Array,
    pairwise_fn: Callable[..., Any] = jnp.multiply,
    extra_batch_dims: int = 0,
    dtype: Any = jnp.float32,
) -> jax.Array:
    """A mask ``[batch..., 1, q_length, kv_length]`` from ``pairwise_fn(query_i, key_j)``.

    ``query_input`` is ``[batch..., q_length]`` and ``key_input`` ``[batch..., kv_length]``;
    with the default ``jnp.multiply`` two padding masks (1 for a token, 0 for padding) give
    the mask of pairs of real tokens. ``extra_batch_dims`` leading axes of size 1 are added.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> tokens = jnp.array([[1, 1, 0]])          # one sequence, the last position is padding
        >>> mask = nnx.make_attention_mask(tokens, tokens)
        >>> mask.shape, mask[0, 0].tolist()
        ((1, 1, 3, 3), [[1.0, 1.0, 0.0], [1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    """
    mask = pairwise_fn(jnp.expand_dims(query_input, -1), jnp.expand_dims(key_input, -2))
    mask = jnp.expand_dims(mask, -3)
    mask = jnp.expand_dims(mask, tuple(range(extra_batch_dims)))
    return mask.astype(dtype)


def make_causal_mask(x: jax.Array, extra_batch_dims: int = 0, dtype: Any = jnp.float32) -> jax.Array:
    """A causal mask ``[batch..., 1, length, length]`` for ``x`` of shape ``[batch..., length]``.

    Query position ``i`` may attend to key positions ``0..i``. Only the shape of ``x`` is used.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> nnx.make_causal_mask(jnp.ones(3))[0].tolist()
        [[1.0, 0.0, 0.0], [1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
    """
    positions = jnp.broadcast_to(jnp.arange(jnp.shape(x)[-1], dtype=jnp.int32), jnp.shape(x))
    return make_attention_mask(positions, positions, jnp.greater_equal, extra_batch_dims, dtype)


def combine_masks(*masks: jax.Array | None, dtype: Any = jnp.float32) -> jax.Array | None:
    """The logical AND of the masks that are not None (None if all are).

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> nnx.combine_masks(jnp.array([1, 1, 0]), None, jnp.array([0, 1, 1])).tolist()
        [0.0, 1.0, 0.0]
    """
    given = [m for m in masks if m is not None]
    if not given:
        return None
    ranks = [jnp.ndim(m) for m in given]
    if len(set(ranks)) != 1:
        raise LayerError(
            f"combine_masks: the masks have ranks {ranks}; they must all have the same rank "
            "(add size-1 axes with jnp.expand_dims)"
        )
    mask = given[0]
    for other in given[1:]:
        mask = jnp.logical_and(mask, other)
    return jnp.asarray(mask, dtype)


# =======================================================================================
# The module
# =======================================================================================


def _concrete_int(x: Any) -> int:
    """``int(x)``, or -1 when ``x`` is traced (its value is not known until the program runs)."""
    try:
        return int(x)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerIntegerConversionError):
        return -1


def _first(*values: Any) -> Any:
    for v in values:
        if v is not None:
            return v
    return None


class MultiHeadAttention(Module):
    """Multi-head dot-product attention with learned query, key, value and output projections.

    ``inputs_q`` is ``[batch..., q_length, in_features]``; ``inputs_k`` and ``inputs_v``
    (``[batch..., kv_length, in_kv_features]``) default to ``inputs_q`` (self-attention),
    and ``inputs_v`` to ``inputs_k``. The queries use ``num_heads`` heads of
    ``qkv_features // num_heads`` features; keys and values use ``num_kv_heads`` heads
    (default ``num_heads``; fewer gives grouped-query attention, each key/value head serving
    ``num_heads // num_kv_heads`` query heads). The result is ``[batch..., q_length,
    out_features]``.

    Parameters live in the ``LinearGeneral`` sub-modules ``query``, ``key``, ``value``
    (kernels ``(in, heads, head_dim)``) and ``out`` (kernel ``(num_heads, head_dim,
    out_features)``), plus the ``LayerNorm`` layers ``query_ln``/``key_ln`` (scale only) with
    ``normalize_qk=True``.

    Dropout on the attention weights (``dropout_rate > 0``) draws a new key from the
    ``dropout`` stream (falling back to ``default``) of the ``rngs`` given here (kept
    unless ``keep_rngs=False``; then each call passes ``rngs``), on every call; ``deterministic=True`` (in the constructor, the call, or via ``model.eval()``)
    turns it off. With dropout and ``deterministic`` left None, the call raises.

    Decoding: call :meth:`init_cache` with the shape of the full sequence, then call with
    ``decode=True`` and one token ``[batch..., 1, in_features]`` at a time; each call
    attends to the tokens given so far.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> mha = nnx.MultiHeadAttention(2, 8, dropout_rate=0.5, deterministic=False, rngs=nnx.Rngs(0))
        >>> x = jnp.arange(64.0).reshape(2, 4, 8) / 64
        >>> mha(x).shape, mha.query.kernel.value.shape, mha.out.kernel.value.shape
        ((2, 4, 8), (8, 2, 4), (2, 4, 8))
        >>> bool((mha(x) != mha(x)).any())                  # a new dropout mask every call
        True
        >>> bool((mha(x, deterministic=True) == mha.eval()(x)).all())
        True
    """

    def __init__(
        self,
        num_heads: int,
        in_features: int,
        qkv_features: int | None = None,
        out_features: int | None = None,
        in_kv_features: int | None = None,
        *,
        num_kv_heads: int | None = None,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        broadcast_dropout: bool = True,
        dropout_rate: float = 0.0,
        deterministic: bool | None = None,
        precision: Any = None,
        kernel_init: Any = default_kernel_init,
        out_kernel_init: Any = None,
        bias_init: Any = default_bias_init,
        out_bias_init: Any = None,
        use_bias: bool = True,
        attention_fn: Callable[..., jax.Array] = dot_product_attention,
        decode: bool | None = None,
        normalize_qk: bool = False,
        qkv_promote_dtype: Callable[..., Any] = default_promote_dtype,
        out_promote_dtype: Callable[..., Any] = default_promote_dtype,
        ln_promote_dtype: Callable[..., Any] = default_promote_dtype,
        qkv_dot_general: Any = None,
        out_dot_general: Any = None,
        qkv_dot_general_cls: Any = None,
        out_dot_general_cls: Any = None,
        keep_rngs: bool = True,
        rngs: Rngs,
        kernel_metadata: Mapping[str, Any] = NO_METADATA,
        out_kernel_metadata: Mapping[str, Any] = NO_METADATA,
        bias_metadata: Mapping[str, Any] = NO_METADATA,
        out_bias_metadata: Mapping[str, Any] = NO_METADATA,
        query_ln_scale_metadata: Mapping[str, Any] = NO_METADATA,
        key_ln_scale_metadata: Mapping[str, Any] = NO_METADATA,
    ) -> None:
        check_rngs(rngs, "MultiHeadAttention", "nnx.MultiHeadAttention(num_heads, in_features, rngs=nnx.Rngs(0))")
        qkv_features = qkv_features if qkv_features is not None else in_features
        out_features = out_features if out_features is not None else in_features
        in_kv_features = in_kv_features if in_kv_features is not None else in_features
        num_kv_heads = num_kv_heads if num_kv_heads is not None else num_heads
        if qkv_features % num_heads:
            raise LayerError(
                f"MultiHeadAttention: qkv_features={qkv_features} must be divisible by num_heads={num_heads}"
            )
        if num_kv_heads < 1 or num_heads % num_kv_heads:
            raise LayerError(
                f"MultiHeadAttention: num_heads={num_heads} must be a multiple of num_kv_heads={num_kv_heads}: "
                "each key/value head serves the same number of query heads"
            )
        if not 0.0 <= dropout_rate <= 1.0:
            raise ValueError(f"MultiHeadAttention: dropout_rate must be in [0, 1], got {dropout_rate}")
        head_dim = qkv_features // num_heads

        def projection(in_f: int, heads: int) -> LinearGeneral:
            return LinearGeneral(
                in_f, (heads, head_dim), use_bias=use_bias, dtype=dtype, param_dtype=param_dtype,
                precision=precision, kernel_init=kernel_init, bias_init=bias_init, rngs=rngs,
                kernel_metadata=kernel_metadata, bias_metadata=bias_metadata, promote_dtype=qkv_promote_dtype,
                dot_general=qkv_dot_general, dot_general_cls=qkv_dot_general_cls,
            )

        self.query = projection(in_features, num_heads)
        self.key = projection(in_kv_features, num_kv_heads)
        self.value = projection(in_kv_features, num_kv_heads)
        if normalize_qk:
            # Normalising queries and keys keeps the logits small (ViT-22B, arXiv:2302.05442).
            self.query_ln = LayerNorm(
                head_dim, use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs,
                scale_metadata=query_ln_scale_metadata, promote_dtype=ln_promote_dtype,
            )
            self.key_ln = LayerNorm(
                head_dim, use_bias=False, dtype=dtype, param_dtype=param_dtype, rngs=rngs,
                scale_metadata=key_ln_scale_metadata, promote_dtype=ln_promote_dtype,
            )
        else:
            self.query_ln = None
            self.key_ln = None
        self.out = LinearGeneral(
            (num_heads, head_dim), out_features, axis=(-2, -1), use_bias=use_bias, dtype=dtype,
            param_dtype=param_dtype, precision=precision, kernel_init=out_kernel_init or kernel_init,
            bias_init=out_bias_init or bias_init, rngs=rngs,
            # As in the reference: the output layer's own metadata, if any, else the shared one.
            kernel_metadata=out_kernel_metadata or kernel_metadata, bias_metadata=out_bias_metadata or bias_metadata,
            promote_dtype=out_promote_dtype, dot_general=out_dot_general, dot_general_cls=out_dot_general_cls,
        )
        # Only a layer that drops out holds RNG state: a stack of attention layers without
        # dropout can then be scanned without splitting or carrying any stream. With
        # keep_rngs=False it holds none either, and each call that drops out takes rngs.
        self.rngs = rngs if keep_rngs and dropout_rate > 0.0 else None
        self.cached_key: Cache | None = None
        self.cached_value: Cache | None = None
        self.cache_index: Cache | None = None

        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads
        self.in_features = in_features
        self.in_kv_features = in_kv_features
        self.qkv_features = qkv_features
        self.out_features = out_features
        self.head_dim = head_dim
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.broadcast_dropout = broadcast_dropout
        self.dropout_rate = dropout_rate
        self.deterministic = deterministic
        self.precision = precision
        self.use_bias = use_bias
        self.attention_fn = attention_fn
        self.decode = decode
        self.normalize_qk = normalize_qk
        self.keep_rngs = keep_rngs

    def __call__(
        self,
        inputs_q: jax.Array,
        inputs_k: jax.Array | None = None,
        inputs_v: jax.Array | None = None,
        *,
        mask: jax.Array | None = None,
        deterministic: bool | None = None,
        rngs: Rngs | RngStream | None = None,
        sow_weights: bool = False,
        decode: bool | None = None,
        is_causal: bool = False,
    ) -> jax.Array:
        """Attend from ``inputs_q`` to ``inputs_k``/``inputs_v``; see the class docstring.

        ``mask`` is broadcastable to ``[batch..., num_heads, q_length, kv_length]``.
        ``deterministic``, ``rngs`` and ``decode`` given here take precedence over the
        constructor's. ``is_causal=True`` adds a causal mask (see
        :func:`dot_product_attention_weights`). ``sow_weights=True`` sows the attention weights: after the call,
        ``self.attention_weights.value`` is a tuple holding those of each such call, as in
        Flax NNX (``nnx.pop(model, nnx.Intermediate)`` collects and removes them).
        """
        if inputs_k is None:
            if inputs_v is not None:
                raise LayerError(
                    "MultiHeadAttention: inputs_v was given without inputs_k. For the same keys and values "
                    "pass only inputs_k: mha(q, kv)"
                )
            inputs_k = inputs_q
        if inputs_v is None:
            inputs_v = inputs_k
        self._check_features(inputs_q, self.in_features, "inputs_q", "in_features")
        self._check_features(inputs_k, self.in_kv_features, "inputs_k", "in_kv_features")
        self._check_features(inputs_v, self.in_kv_features, "inputs_v", "in_kv_features")
        decoding = _first(decode, self.decode, False)
        if mask is not None:
            self._check_mask(mask, inputs_q, inputs_k, decoding)

        query = self.query(inputs_q)
        key = self.key(inputs_k)
        value = self.value(inputs_v)
        if self.normalize_qk:
            query = self.query_ln(query)
            key = self.key_ln(key)

        if decoding:
            key, value, mask = self._decode_step(query, key, value, mask)

        groups = self.num_heads // self.num_kv_heads
        if groups > 1:  # grouped-query attention: each key/value head serves `groups` query heads
            key = jnp.repeat(key, groups, axis=-2)
            value = jnp.repeat(value, groups, axis=-2)

        dropout_rng = None
        if self.dropout_rate > 0.0:
            deterministic = _first(deterministic, self.deterministic)
            if deterministic is None:
                raise LayerError(
                    f"MultiHeadAttention(dropout_rate={self.dropout_rate}) was not told whether to drop out: "
                    "deterministic is None in both the constructor and the call.\n"
                    "Pass deterministic=False (train) or True (eval) to the constructor or the call, "
                    "or set it with model.train() / model.eval()."
                )
            if not deterministic:
                dropout_rng = self._dropout_key(rngs)
        else:
            deterministic = True

        x = self.attention_fn(
            query,
            key,
            value,
            mask=mask,
            dropout_rng=dropout_rng,
            dropout_rate=self.dropout_rate,
            broadcast_dropout=self.broadcast_dropout,
            deterministic=deterministic,
            dtype=self.dtype,
            precision=self.precision,
            module=self if sow_weights else None,
            **({"is_causal": True} if is_causal else {}),  # a custom attention_fn need not take it
        )
        return self.out(x)

    def _check_features(self, x: Any, expected: int, name: str, attribute: str) -> None:
        shape = tuple(jnp.shape(x))
        if len(shape) < 2:
            raise LayerError(
                f"MultiHeadAttention({attribute}={expected}) got {name} of shape {shape}: expected "
                f"[batch..., length, {expected}], at least a length axis and a feature axis.\n"
                f"For a single token write {name}[None, :] (shape {(1, *shape)}), a sequence of length 1."
            )
        if shape[-1:] != (expected,):
            raise LayerError(
                f"MultiHeadAttention({attribute}={expected}) got {name} of shape {shape}: its last axis "
                f"must be {expected}"
            )

    def _check_mask(self, mask: Any, inputs_q: Any, inputs_k: Any, decoding: bool) -> None:
        """The mask must broadcast to the weights ``[batch..., num_heads, q_length, kv_length]``."""
        q_shape, k_shape = tuple(jnp.shape(inputs_q)), tuple(jnp.shape(inputs_k))
        kv_length = k_shape[-2]
        if decoding and self.cached_key is not None:
            kv_length = self.cached_key.value.shape[-3]  # the step attends to the whole cache
        batch = jnp.broadcast_shapes(q_shape[:-2], k_shape[:-2])
        weights = (*batch, self.num_heads, q_shape[-2], kv_length)
        shape = tuple(jnp.shape(mask))
        if not _broadcasts_to(shape, weights):
            raise LayerError(
                f"MultiHeadAttention(num_heads={self.num_heads}) got a mask of shape {shape} for inputs_q of "
                f"shape {q_shape} and inputs_k of shape {k_shape}"
                + (f" (decoding against a cache of {kv_length} positions)" if decoding else "")
                + f": the mask must broadcast to [batch..., num_heads, q_length, kv_length] = {weights}.\n"
                f"Give a mask of shape {weights}, or {(*batch, 1, q_shape[-2], kv_length)} for every head; "
                "nnx.make_attention_mask(query_tokens, key_tokens) and nnx.make_causal_mask(tokens) build it."
            )

    def _dropout_key(self, rngs: Any) -> jax.Array:
        rngs = rngs if rngs is not None else self.rngs
        if isinstance(rngs, Rngs):
            return rngs.dropout()
        if isinstance(rngs, RngStream):
            return rngs()
        raise RngError(
            "MultiHeadAttention has no RNG for dropout: it was built with dropout_rate=0, keep_rngs=False "
            f"or no rngs, and the call got rngs={rngs!r}.\n"
            "Build it with nnx.MultiHeadAttention(..., dropout_rate=r, rngs=rngs), pass rngs=rngs to "
            "the call, or turn dropout off with deterministic=True."
        )

    def _decode_step(self, query: jax.Array, key: jax.Array, value: jax.Array, mask: Any) -> tuple:
        if self.cached_key is None or self.cached_value is None or self.cache_index is None:
            raise LayerError(
                "MultiHeadAttention was called with decode=True but has no cache.\n"
                "Make one first, for the whole sequence: mha.init_cache((batch, max_length, in_features))"
            )
        *batch, max_length, kv_heads, head_dim = self.cached_key.value.shape
        expected = (*batch, 1, kv_heads, head_dim)
        if tuple(key.shape) != expected or tuple(query.shape[:-3]) != tuple(batch) or query.shape[-3] != 1:
            raise LayerError(
                f"MultiHeadAttention decodes one token at a time: the cache (from init_cache) is for "
                f"inputs of shape {(*batch, max_length, self.in_features)}, so each call takes "
                f"{(*batch, 1, self.in_features)}; got a query of length {query.shape[-3]} and batch "
                f"{tuple(query.shape[:-3])}"
            )
        index = self.cache_index.value
        if _concrete_int(index) >= max_length:
            raise LayerError(
                f"MultiHeadAttention: the decoding cache is full ({max_length} tokens, from init_cache); "
                "call init_cache again to start a new sequence, with a larger length if needed"
            )
        zero = jnp.zeros((), jnp.asarray(index).dtype)
        start = (zero,) * len(batch) + (index, zero, zero)
        key = jax.lax.dynamic_update_slice(self.cached_key.value, key.astype(self.cached_key.value.dtype), start)
        value = jax.lax.dynamic_update_slice(
            self.cached_value.value, value.astype(self.cached_value.value.dtype), start
        )
        self.cached_key.value = key
        self.cached_value.value = value
        self.cache_index.value = index + 1
        # The one query may attend to the tokens cached so far, not to the empty slots after them.
        filled = jnp.broadcast_to(jnp.arange(max_length) <= index, (*batch, 1, 1, max_length))
        return key, value, combine_masks(mask, filled)

    def init_cache(self, input_shape: Sequence[int], dtype: Any = jnp.float32) -> None:
        """Make empty ``nnx.Cache`` variables for decoding a sequence of ``input_shape``.

        ``input_shape`` is ``(*batch, max_length, in_features)``, the shape of the whole
        sequence. This creates ``cached_key`` and ``cached_value`` (``(*batch, max_length,
        num_kv_heads, head_dim)``, of ``dtype``) and ``cache_index`` (0); calling it again
        starts a new sequence.

        Example:
            >>> import jax.numpy as jnp, plait as nnx
            >>> mha = nnx.MultiHeadAttention(2, 8, decode=True, rngs=nnx.Rngs(0))
            >>> mha.init_cache((2, 4, 8))                  # (batch, max_length, features)
            >>> mha(jnp.ones((2, 1, 8))).shape, int(mha.cache_index.value), mha.cached_key.value.shape
            ((2, 1, 8), 1, (2, 4, 2, 4))
        """
        input_shape = tuple(input_shape)
        if len(input_shape) < 2:
            raise LayerError(
                f"MultiHeadAttention.init_cache: input_shape {input_shape} must be (*batch, max_length, in_features)"
            )
        shape = (*input_shape[:-1], self.num_kv_heads, self.head_dim)
        self.cached_key = Cache(jnp.zeros(shape, dtype))
        self.cached_value = Cache(jnp.zeros(shape, dtype))
        self.cache_index = Cache(jnp.array(0, dtype=jnp.int32))
