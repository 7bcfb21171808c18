"""Normalization layers: rescale activations (or weights) to a standard size.

The activation normalizers share one computation and differ only in the axes their
statistics run over (the learned ``scale`` and ``bias`` run over the features):

- ``BatchNorm``: every axis but the feature ``axis``, i.e. the batch (and space).
- ``LayerNorm``: ``reduction_axes`` of each example (default: the last axis).
- ``RMSNorm``: as LayerNorm, dividing by the root mean square; no mean is subtracted.
- ``GroupNorm``: each group of channels, and every axis but the first (the batch).
- ``InstanceNorm``: every axis but the first (the batch) and the features.

``y = (x - mean) / sqrt(var + epsilon) * scale + bias``. Statistics are computed in at
least float32, whatever the input dtype; the output has ``dtype`` if given, else the
promoted dtype of the input and the parameters. BatchNorm's running ``mean``/``var``
(float32) take part in that promotion, so without ``dtype`` a half-precision BatchNorm
returns float32, and with ``dtype`` its running statistics are cast to it before use.
These are the reference's casts, in its order of operations, so outputs agree with it
bit for bit in float16 and bfloat16 too.

The variance is ``mean(x * x) - mean(x) ** 2`` when ``use_fast_variance=True`` (the
default): both means come from one pass over ``x``, and XLA on CPU compiles that form much
faster in deep unrolled models than centring ``x`` first. ``axis_name`` averages the
statistics over a named ``vmap``/``pmap`` axis, so lanes or devices normalise with the
statistics of the whole batch.

``WeightNorm`` and ``SpectralNorm`` normalise a wrapped layer's *weights* instead; the
layer's own Params stay the raw, trainable values.
"""

from __future__ import annotations

from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import initializers
from ..errors import LayerError
from ..graph import iter_graph
from ..module import Module
from ..rngs import Rngs
from ..variables import BatchStat, Param, Variable
from .linear import NO_METADATA, check_rngs, keep_arguments, promote_dtype

__all__ = ["BatchNorm", "LayerNorm", "RMSNorm", "GroupNorm", "InstanceNorm", "WeightNorm", "SpectralNorm"]

Axes = int | Sequence[int]


# -- the shared computation -------------------------------------------------------------------


def _canonical_axes(axes: Axes | None, shape: tuple, what: str, name: str) -> tuple[int, ...]:
    """Sorted, non-negative, distinct axes; an error naming the layer if one is out of range."""
    if axes is None:
        return ()
    given = axes
    axes = (axes,) if isinstance(axes, (int, np.integer)) else tuple(axes)
    ndim = len(shape)
    bad = [a for a in axes if not -ndim <= a < ndim]
    if bad:
        raise LayerError(f"{what}: {name}={given} does not fit an input of shape {shape} ({ndim} axes)")
    return tuple(sorted({int(a) % ndim for a in axes}))


def _abs_sq(x: jax.Array) -> jax.Array:
    if jnp.iscomplexobj(x):
        return jax.lax.square(jnp.real(x)) + jax.lax.square(jnp.imag(x))
    return jax.lax.square(x)


def _statistics(
    x: jax.Array,
    axes: tuple[int, ...],
    dtype: Any,
    axis_name: Any,
    axis_index_groups: Any,
    *,
    use_mean: bool = True,
    use_fast_variance: bool = True,
    mask: jax.Array | None = None,
) -> tuple[jax.Array | None, jax.Array]:
    """``(mean, var)`` of ``x`` over ``axes`` (reduced away), at least in float32.

    With ``use_mean=False`` the mean is ``None`` and ``var`` is the mean square.
    """
    dtype = jnp.promote_types(jnp.result_type(x) if dtype is None else dtype, jnp.float32)
    x = jnp.asarray(x, dtype)

    def means(*arrays: jax.Array) -> list[jax.Array]:
        mus = [jnp.mean(a, axes, where=mask) for a in arrays]
        if axis_name is None:
            return mus
        if len(mus) == 1:
            return [jax.lax.pmean(mus[0], axis_name, axis_index_groups=axis_index_groups)]
        # One collective for both statistics.
        stacked = jax.lax.pmean(jnp.stack(mus), axis_name, axis_index_groups=axis_index_groups)
        return [stacked[i] for i in range(len(mus))]

    if not use_mean:
        (mean_square,) = means(_abs_sq(x))
        return None, mean_square
    if use_fast_variance:
        # Square first, then average: mean(x*x) - mean(x)**2. Round-off can make it
        # slightly negative, hence the clamp.
        mu, mu2 = means(x, _abs_sq(x))
        return mu, jnp.maximum(0.0, jnp.real(mu2) - _abs_sq(mu))
    (mu,) = means(x)
    (var,) = means(_abs_sq(x - jnp.expand_dims(mu, axes)))
    return mu, var


def _normalize(
    x: jax.Array,
    mean: jax.Array | None,
    var: jax.Array,
    scale: jax.Array | None,
    bias: jax.Array | None,
    reduction_axes: tuple[int, ...],
    feature_axes: tuple[int, ...],
    dtype: Any,
    epsilon: float,
) -> jax.Array:
    """``(x - mean) * rsqrt(var + epsilon) * scale + bias``, cast to the output dtype."""
    stats_shape = [1 if i in reduction_axes else d for i, d in enumerate(x.shape)]
    feature_shape = [d if i in feature_axes else 1 for i, d in enumerate(x.shape)]
    y = x if mean is None else x - jnp.reshape(mean, stats_shape)
    mul = jax.lax.rsqrt(jnp.reshape(var, stats_shape) + epsilon)
    if scale is not None:
        mul = mul * jnp.reshape(scale, feature_shape)
    y = y * mul
    if bias is not None:
        y = y + jnp.reshape(bias, feature_shape)
    return jnp.asarray(y, dtype)


def _check_features(shape: tuple, feature_axes: tuple[int, ...], num_features: int, what: str, name: str) -> None:
    sizes = tuple(shape[a] for a in feature_axes)
    if int(np.prod(sizes)) != num_features:
        raise LayerError(
            f"{what} got input of shape {shape}: its feature axes {name} have size(s) {sizes}, "
            f"expected {num_features} features in all"
        )


def _check_batch_has_spread(shape: tuple, reduction_axes: tuple[int, ...], what: str, axis_name: Any) -> None:
    """Refuse batch statistics over one value per feature: they normalise every feature to 0.

    The count is static, so this also holds under ``jit``. With ``axis_name`` the
    statistics are averaged over a ``vmap``/``pmap`` axis too, so one value per lane is fine.
    """
    if axis_name is None and int(np.prod([shape[a] for a in reduction_axes])) == 1:
        raise LayerError(
            f"{what} in training mode got input of shape {shape}: its batch statistics (over axes "
            f"{reduction_axes}) would be over a single value per feature, so every output would be 0 (or "
            "the bias) whatever the input.\n"
            "Normalise with the running averages for such batches: bn(x, use_running_average=True) or "
            "model.eval(); or train on a batch of more than one example."
        )


def _feature_params(
    layer: Module, num_features: int, use_scale: bool, use_bias: bool, scale_init: Any, bias_init: Any,
    param_dtype: Any, rngs: Rngs, scale_metadata: Mapping[str, Any] = NO_METADATA,
    bias_metadata: Mapping[str, Any] = NO_METADATA,
) -> None:
    shape = (num_features,)
    layer.scale = Param(scale_init(rngs.params(), shape, param_dtype), **scale_metadata) if use_scale else None
    layer.bias = Param(bias_init(rngs.params(), shape, param_dtype), **bias_metadata) if use_bias else None


def _promoted(layer: Module, x: jax.Array) -> tuple[jax.Array, jax.Array | None, jax.Array | None]:
    scale = layer.scale.value if getattr(layer, "scale", None) is not None else None
    if isinstance(layer, RMSNorm):  # no bias: promote_dtype gets (x, scale), as in the reference
        x, scale = layer.promote_dtype((x, scale), dtype=layer.dtype)
        return x, scale, None
    bias = layer.bias.value if getattr(layer, "bias", None) is not None else None
    x, scale, bias = layer.promote_dtype((x, scale, bias), dtype=layer.dtype)
    return x, scale, bias


# -- activation normalizers -------------------------------------------------------------------


class BatchNorm(Module):
    """Normalise with the statistics of the batch, and keep running averages for evaluation.

    In training (``use_running_average=False``) each call normalises with the mean and
    variance of its batch (all axes but ``axis``) and updates the ``mean`` and ``var``
    BatchStats: ``stat = momentum * stat + (1 - momentum) * batch_stat``. With
    ``use_running_average=True`` (``model.eval()``) it normalises with those running
    averages and changes nothing. The flag can also be given per call. With
    ``axis_name``, the batch statistics are averaged over that ``vmap``/``pmap`` axis.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> bn = nnx.BatchNorm(2, momentum=0.9, rngs=nnx.Rngs(0))
        >>> x = jnp.array([[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]])     # batch means [2, 3]
        >>> print(bn(x)[:, 0].round(3), bn.mean.value.round(3))
        [-1.225  0.     1.225] [0.2 0.3]
        >>> _ = bn.eval()(x)      # normalises with the running averages, updates nothing
        >>> print(bn.mean.value.round(3))
        [0.2 0.3]
    """

    def __init__(
        self,
        num_features: int,
        *,
        use_running_average: bool = False,
        axis: Axes = -1,
        momentum: float = 0.99,
        epsilon: float = 1e-5,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        use_bias: bool = True,
        use_scale: bool = True,
        bias_init: Any = initializers.zeros,
        scale_init: Any = initializers.ones,
        axis_name: Any = None,
        axis_index_groups: Any = None,
        use_fast_variance: bool = True,
        promote_dtype: Callable[..., Any] = promote_dtype,
        rngs: Rngs,
        bias_metadata: Mapping[str, Any] = NO_METADATA,
        scale_metadata: Mapping[str, Any] = NO_METADATA,
    ) -> None:
        check_rngs(rngs, "BatchNorm", "nnx.BatchNorm(num_features, rngs=nnx.Rngs(0))")
        keep_arguments(self, locals(), "scale_init", "bias_init", "scale_metadata", "bias_metadata")
        self.mean = BatchStat(jnp.zeros((num_features,), jnp.float32))
        self.var = BatchStat(jnp.ones((num_features,), jnp.float32))
        _feature_params(
            self, num_features, use_scale, use_bias, scale_init, bias_init, param_dtype, rngs, scale_metadata, bias_metadata
        )

    def __call__(
        self, x: jax.Array, use_running_average: bool | None = None, *, mask: jax.Array | None = None
    ) -> jax.Array:
        if use_running_average is None:
            use_running_average = self.use_running_average
        what = f"BatchNorm({self.num_features})"
        shape = tuple(jnp.shape(x))
        feature_axes = _canonical_axes(self.axis, shape, what, "axis")
        _check_features(shape, feature_axes, self.num_features, what, f"axis={self.axis}")
        reduction_axes = tuple(i for i in range(len(shape)) if i not in feature_axes)
        # The running statistics join the promotion, as in the reference: with float32
        # statistics a half-precision input is normalised (and returned) in float32 unless
        # `dtype` says otherwise; with `dtype` they are cast to it.
        scale = self.scale.value if self.scale is not None else None
        bias = self.bias.value if self.bias is not None else None
        x, mean, var, scale, bias = self.promote_dtype(
            (x, self.mean.value, self.var.value, scale, bias), dtype=self.dtype
        )
        if not use_running_average:
            _check_batch_has_spread(shape, reduction_axes, what, self.axis_name)
            mean, var = _statistics(
                x, reduction_axes, self.dtype, self.axis_name, self.axis_index_groups,
                use_fast_variance=self.use_fast_variance, mask=mask,
            )
            keep = self.momentum
            old_mean, old_var = self.mean.value, self.var.value
            new_mean = keep * old_mean + (1 - keep) * jnp.reshape(mean, old_mean.shape)
            new_var = keep * old_var + (1 - keep) * jnp.reshape(var, old_var.shape)
            # Keep the stored dtype, so a carried or jitted state keeps its type.
            self.mean.value = jnp.asarray(new_mean, old_mean.dtype)
            self.var.value = jnp.asarray(new_var, old_var.dtype)
        return _normalize(x, mean, var, scale, bias, reduction_axes, feature_axes, x.dtype, self.epsilon)


class _FeatureNorm(Module):
    """What LayerNorm and RMSNorm share: statistics over ``reduction_axes`` of each example."""

    _use_mean = True

    def __call__(self, x: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
        what = f"{type(self).__name__}({self.num_features})"
        shape = tuple(jnp.shape(x))
        reduction_axes = _canonical_axes(self.reduction_axes, shape, what, "reduction_axes")
        feature_axes = _canonical_axes(self.feature_axes, shape, what, "feature_axes")
        _check_features(shape, feature_axes, self.num_features, what, f"feature_axes={self.feature_axes}")
        x, scale, bias = _promoted(self, x)
        mean, var = _statistics(
            x, reduction_axes, self.dtype, self.axis_name, self.axis_index_groups,
            use_mean=self._use_mean, use_fast_variance=self.use_fast_variance, mask=mask,
        )
        return _normalize(x, mean, var, scale, bias, reduction_axes, feature_axes, x.dtype, self.epsilon)


class LayerNorm(_FeatureNorm):
    """Normalise each example on its own, over ``reduction_axes`` (by default the features).

    Example:
        >>> import jax, jax.numpy as jnp, plait as nnx
        >>> ln = nnx.LayerNorm(4, rngs=nnx.Rngs(0))
        >>> y = ln(jnp.array([[0.0, 0.0, 4.0, 4.0]]))     # mean 2, variance 4
        >>> print(y.round(3))
        [[-1. -1.  1.  1.]]
    """

    def __init__(
        self,
        num_features: int,
        *,
        epsilon: float = 1e-6,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        use_bias: bool = True,
        use_scale: bool = True,
        bias_init: Any = initializers.zeros,
        scale_init: Any = initializers.ones,
        reduction_axes: Axes = -1,
        feature_axes: Axes = -1,
        axis_name: Any = None,
        axis_index_groups: Any = None,
        use_fast_variance: bool = True,
        promote_dtype: Callable[..., Any] = promote_dtype,
        rngs: Rngs,
        bias_metadata: Mapping[str, Any] = NO_METADATA,
        scale_metadata: Mapping[str, Any] = NO_METADATA,
    ) -> None:
        check_rngs(rngs, "LayerNorm", "nnx.LayerNorm(num_features, rngs=nnx.Rngs(0))")
        keep_arguments(self, locals(), "scale_init", "bias_init", "scale_metadata", "bias_metadata")
        _feature_params(
            self, num_features, use_scale, use_bias, scale_init, bias_init, param_dtype, rngs, scale_metadata, bias_metadata
        )


class RMSNorm(_FeatureNorm):
    """Divide by the root mean square over ``reduction_axes``: LayerNorm without the mean.

    ``y = x / sqrt(mean(x * x) + epsilon) * scale``; there is no bias.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> norm = nnx.RMSNorm(4, rngs=nnx.Rngs(0))
        >>> print(norm(jnp.array([0.0, 0.0, 0.0, 4.0])).round(3))     # mean square 4, rms 2
        [0. 0. 0. 2.]
    """

    _use_mean = False

    def __init__(
        self,
        num_features: int,
        *,
        epsilon: float = 1e-6,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        use_scale: bool = True,
        scale_init: Any = initializers.ones,
        reduction_axes: Axes = -1,
        feature_axes: Axes = -1,
        axis_name: Any = None,
        axis_index_groups: Any = None,
        use_fast_variance: bool = True,
        promote_dtype: Callable[..., Any] = promote_dtype,
        rngs: Rngs,
        scale_metadata: Mapping[str, Any] = NO_METADATA,
    ) -> None:
        check_rngs(rngs, "RMSNorm", "nnx.RMSNorm(num_features, rngs=nnx.Rngs(0))")
        keep_arguments(self, locals(), "scale_init", "scale_metadata")
        _feature_params(self, num_features, use_scale, False, scale_init, None, param_dtype, rngs, scale_metadata)


class GroupNorm(Module):
    """Split the channels (last axis) into groups and normalise each group of each example.

    Give ``num_groups`` or ``group_size`` (then pass ``num_groups=None``). The statistics
    of a group run over its channels and over ``reduction_axes``, by default every axis
    but the first (the batch). ``num_groups=1`` is LayerNorm over all non-batch axes;
    ``group_size=1`` is InstanceNorm.

    Example:
        >>> import jax, jax.numpy as jnp, plait as nnx
        >>> gn = nnx.GroupNorm(6, num_groups=2, rngs=nnx.Rngs(0))
        >>> y = gn(jax.random.normal(jax.random.key(0), (2, 5, 6)))     # (batch, length, channels)
        >>> bool(jnp.allclose(y[0, :, :3].mean(), 0.0, atol=1e-5))
        True
    """

    def __init__(
        self,
        num_features: int,
        num_groups: int | None = 32,
        group_size: int | None = None,
        *,
        epsilon: float = 1e-6,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        use_bias: bool = True,
        use_scale: bool = True,
        bias_init: Any = initializers.zeros,
        scale_init: Any = initializers.ones,
        reduction_axes: Axes | None = None,
        axis_name: Any = None,
        axis_index_groups: Any = None,
        use_fast_variance: bool = True,
        promote_dtype: Callable[..., Any] = promote_dtype,
        rngs: Rngs,
        bias_metadata: Mapping[str, Any] = NO_METADATA,
        scale_metadata: Mapping[str, Any] = NO_METADATA,
    ) -> None:
        check_rngs(rngs, "GroupNorm", "nnx.GroupNorm(num_features, num_groups=32, rngs=nnx.Rngs(0))")
        what = f"GroupNorm({num_features})"
        if (num_groups is None) == (group_size is None):
            raise LayerError(
                f"{what}: give exactly one of num_groups and group_size (num_groups={num_groups}, "
                f"group_size={group_size}). num_groups defaults to 32, so to set group_size write "
                "nnx.GroupNorm(num_features, num_groups=None, group_size=..., rngs=rngs)"
            )
        if group_size is not None:
            if group_size < 1 or num_features % group_size:
                raise LayerError(f"{what}: group_size={group_size} does not divide the {num_features} features")
            num_groups = num_features // group_size
        elif num_groups < 1 or num_features % num_groups:
            raise LayerError(f"{what}: num_groups={num_groups} does not divide the {num_features} features")
        _feature_params(
            self, num_features, use_scale, use_bias, scale_init, bias_init, param_dtype, rngs, scale_metadata, bias_metadata
        )
        self.num_features = num_features
        self.num_groups = num_groups
        self.group_size = num_features // num_groups
        self.epsilon = epsilon
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.use_bias = use_bias
        self.use_scale = use_scale
        self.reduction_axes = reduction_axes
        self.axis_name = axis_name
        self.axis_index_groups = axis_index_groups
        self.use_fast_variance = use_fast_variance
        self.promote_dtype = promote_dtype

    def __call__(self, x: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
        what = f"GroupNorm({self.num_features}, num_groups={self.num_groups})"
        shape = tuple(jnp.shape(x))
        if not shape or shape[-1] != self.num_features:
            raise LayerError(
                f"{what} got input of shape {shape}: its last axis holds the channels and must be {self.num_features}"
            )
        ndim = len(shape)
        if self.reduction_axes is None:
            axes = tuple(range(1, ndim - 1))
        else:
            axes = tuple(a for a in _canonical_axes(self.reduction_axes, shape, what, "reduction_axes") if a != ndim - 1)
        x, scale, bias = _promoted(self, x)
        # (..., C) -> (..., groups, group_size): statistics over `axes` and the group's channels.
        grouped = jnp.reshape(x, shape[:-1] + (self.num_groups, self.group_size))
        if mask is not None:
            mask = jnp.reshape(jnp.broadcast_to(mask, shape), grouped.shape)
        mean, var = _statistics(
            grouped, (*axes, ndim), self.dtype, self.axis_name, self.axis_index_groups,
            use_fast_variance=self.use_fast_variance, mask=mask,
        )
        # Each group's statistics, repeated over its channels, then the one shared formula:
        # the same operations in the same order as the other normalizers (and the reference).
        mean = jnp.repeat(mean, self.group_size, axis=-1)
        var = jnp.repeat(var, self.group_size, axis=-1)
        return _normalize(x, mean, var, scale, bias, axes, (ndim - 1,), x.dtype, self.epsilon)


class InstanceNorm(Module):
    """Normalise each example and each feature on its own, over the remaining axes.

    Axis 0 is the batch; the statistics run over every axis except it and
    ``feature_axes``: for images ``(N, H, W, C)``, over ``H`` and ``W``.

    Example:
        >>> import jax, jax.numpy as jnp, plait as nnx
        >>> norm = nnx.InstanceNorm(3, rngs=nnx.Rngs(0))
        >>> y = norm(jax.random.normal(jax.random.key(0), (2, 4, 4, 3)))
        >>> bool(jnp.allclose(y.mean((1, 2)), 0.0, atol=1e-5))
        True
    """

    def __init__(
        self,
        num_features: int,
        *,
        epsilon: float = 1e-6,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        use_bias: bool = True,
        use_scale: bool = True,
        bias_init: Any = initializers.zeros,
        scale_init: Any = initializers.ones,
        feature_axes: Axes = -1,
        axis_name: Any = None,
        axis_index_groups: Any = None,
        use_fast_variance: bool = True,
        promote_dtype: Callable[..., Any] = promote_dtype,
        rngs: Rngs,
        bias_metadata: Mapping[str, Any] = NO_METADATA,
        scale_metadata: Mapping[str, Any] = NO_METADATA,
    ) -> None:
        check_rngs(rngs, "InstanceNorm", "nnx.InstanceNorm(num_features, rngs=nnx.Rngs(0))")
        keep_arguments(self, locals(), "scale_init", "bias_init", "scale_metadata", "bias_metadata")
        _feature_params(
            self, num_features, use_scale, use_bias, scale_init, bias_init, param_dtype, rngs, scale_metadata, bias_metadata
        )

    def __call__(self, x: jax.Array, *, mask: jax.Array | None = None) -> jax.Array:
        what = f"InstanceNorm({self.num_features})"
        shape = tuple(jnp.shape(x))
        feature_axes = _canonical_axes(self.feature_axes, shape, what, "feature_axes")
        if 0 in feature_axes:
            raise LayerError(
                f"{what}: feature_axes={self.feature_axes} includes axis 0 of the input of shape {shape}, "
                "but axis 0 is the batch; instance statistics are per example"
            )
        _check_features(shape, feature_axes, self.num_features, what, f"feature_axes={self.feature_axes}")
        reduction_axes = tuple(i for i in range(1, len(shape)) if i not in feature_axes)
        x, scale, bias = _promoted(self, x)
        mean, var = _statistics(
            x, reduction_axes, self.dtype, self.axis_name, self.axis_index_groups,
            use_fast_variance=self.use_fast_variance, mask=mask,
        )
        return _normalize(x, mean, var, scale, bias, reduction_axes, feature_axes, x.dtype, self.epsilon)


# -- weight normalizers -----------------------------------------------------------------------


def _l2_normalize(x: jax.Array, axes: tuple[int, ...] | None, epsilon: float) -> jax.Array:
    return x * jax.lax.rsqrt(jnp.sum(x * x, axis=axes, keepdims=True) + epsilon)


def _path_key(path: tuple) -> str:
    return "/".join(str(p) for p in path)


def _lookup(node: Any, path: tuple) -> Any:
    for step in path:
        node = node[step] if isinstance(node, (list, tuple, dict)) else getattr(node, step)
    return node


def _layer_params(layer: Any, what: str) -> list[tuple[tuple, Param]]:
    if not isinstance(layer, Module):
        raise LayerError(f"{what} wraps a layer (an nnx.Module with a kernel), got a {type(layer).__name__}")
    return [(path, v) for path, v in iter_graph(layer) if isinstance(v, Param)]


@contextmanager
def _substituted(values: list[tuple[Variable, Any]]) -> Iterator[None]:
    """Give Variables new values for the length of a call, then put the originals back.

    This is a loan, not a write: the very same arrays go back, so transforms see the
    layer's Params as read, and nothing traced is left behind. That is why it sets the
    ``_value`` slot directly, past the check that stops writes to state closed over by a
    JAX transform: ``jax.jit(lambda x: layer(x))`` stays as legal as it is for the bare layer.
    """
    saved = [(v, v._value) for v, _ in values]
    try:
        for v, new in values:
            v._value = new
        yield
    finally:
        for v, old in saved:
            v._value = old


class WeightNorm(Module):
    """Reparametrise a layer's kernel as direction times scale: ``w = scale * v / |v|``.

    Each Param of ``layer_instance`` whose path contains a name in ``variable_filter``
    (by default the ``kernel``) is used, on every call, as ``v`` normalised to unit L2
    norm over all axes but ``feature_axes`` (``None``: over all axes), times a learned
    ``scale`` with the shape of the feature axes (kept in ``scales``, keyed by the Param's
    path). The layer's own Param stays ``v``, so it is what an optimizer trains.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> layer = nnx.WeightNorm(nnx.Linear(3, 2, rngs=nnx.Rngs(0)), rngs=nnx.Rngs(1))
        >>> layer.scales["kernel"].value.shape, layer(jnp.ones((4, 3))).shape
        ((2,), (4, 2))
    """

    def __init__(
        self,
        layer_instance: Module,
        *,
        epsilon: float = 1e-12,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        use_scale: bool = True,
        scale_init: Any = initializers.ones,
        feature_axes: Axes | None = -1,
        variable_filter: Container[str] = ("kernel",),
        promote_dtype: Callable[..., Any] = promote_dtype,
        rngs: Rngs,
    ) -> None:
        check_rngs(rngs, "WeightNorm", "nnx.WeightNorm(layer, rngs=nnx.Rngs(0))")
        what = f"WeightNorm({type(layer_instance).__name__})"
        params = _layer_params(layer_instance, what)
        chosen = [(p, v) for p, v in params if any(name in _path_key(p) for name in variable_filter)]
        if not chosen:
            found = ", ".join(_path_key(p) for p, _ in params) or "none"
            raise LayerError(
                f"{what}: no Param of the layer matches variable_filter={tuple(variable_filter)} "
                f"(its Params: {found})"
            )
        self.layer_instance = layer_instance
        self.paths = [p for p, _ in chosen]
        scales = {}
        for path, v in chosen:
            axes = _canonical_axes(feature_axes, v.shape, what, "feature_axes")
            shape = tuple(v.shape[a] for a in axes)
            if use_scale:
                scales[_path_key(path)] = Param(scale_init(rngs.params(), shape, param_dtype))
        self.scales = scales
        self.epsilon = epsilon
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.use_scale = use_scale
        self.feature_axes = feature_axes
        self.variable_filter = tuple(variable_filter)
        self.promote_dtype = promote_dtype

    def normalized(self, path: tuple) -> jax.Array:
        """The weight the layer uses for the Param at ``path``: ``scale * v / |v|``."""
        v = _lookup(self.layer_instance, path).value
        shape = tuple(jnp.shape(v))
        what = f"WeightNorm({type(self.layer_instance).__name__})"
        feature_axes = _canonical_axes(self.feature_axes, shape, what, "feature_axes")
        reduction = tuple(i for i in range(len(shape)) if i not in feature_axes)
        if self.use_scale:
            scale = self.scales[_path_key(path)].value
            v, scale = self.promote_dtype((v, scale), dtype=self.dtype)
            w = _l2_normalize(v, reduction, self.epsilon)
            return w * jnp.reshape(scale, [d if i in feature_axes else 1 for i, d in enumerate(shape)])
        (v,) = self.promote_dtype((v,), dtype=self.dtype)
        return _l2_normalize(v, reduction, self.epsilon)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        values = [(_lookup(self.layer_instance, p), self.normalized(p)) for p in self.paths]
        with _substituted(values):
            return self.layer_instance(*args, **kwargs)


class SpectralNorm(Module):
    """Divide a layer's weights by their largest singular value, estimated by power iteration.

    Every Param of ``layer_instance`` with two or more axes (flattened to a matrix over
    its last axis) is divided, on every call, by ``sigma = v @ W @ u``, where ``u`` and
    ``v`` come from ``n_steps`` of power iteration started at the stored ``u``. In
    training (``update_stats=True``; ``model.train()``) the new ``u`` and ``sigma`` are
    stored as BatchStats in ``batch_stats[path]``, so the estimate sharpens from call to
    call; ``model.eval()`` (or ``update_stats=False`` per call) leaves them unchanged.
    No gradient flows through ``u`` and ``v``. The layer's own Params stay the raw,
    trainable weights.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> layer = nnx.SpectralNorm(nnx.Linear(3, 2, rngs=nnx.Rngs(0)), n_steps=20, rngs=nnx.Rngs(1))
        >>> _ = layer(jnp.ones((1, 3)))
        >>> sigma = layer.batch_stats["kernel"]["sigma"].value
        >>> bool(jnp.isclose(sigma, jnp.linalg.norm(layer.layer_instance.kernel.value, 2), rtol=1e-4))
        True
    """

    def __init__(
        self,
        layer_instance: Module,
        *,
        n_steps: int = 1,
        epsilon: float = 1e-12,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        error_on_non_matrix: bool = False,
        update_stats: bool = True,
        rngs: Rngs,
    ) -> None:
        check_rngs(rngs, "SpectralNorm", "nnx.SpectralNorm(layer, rngs=nnx.Rngs(0))")
        what = f"SpectralNorm({type(layer_instance).__name__})"
        if n_steps < 1:
            raise LayerError(f"{what}: n_steps={n_steps}; power iteration needs at least one step")
        self.layer_instance = layer_instance
        self.n_steps = n_steps
        self.epsilon = epsilon
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.error_on_non_matrix = error_on_non_matrix
        # train()/eval() set use_running_average; update_stats is its opposite.
        self.use_running_average = not update_stats
        paths, stats = [], {}
        for path, v in _layer_params(layer_instance, what):
            if v.ndim < 2:
                continue
            if v.ndim > 2 and error_on_non_matrix:
                raise LayerError(
                    f"{what}: Param `{_path_key(path)}` has shape {v.shape} ({v.ndim} axes) and "
                    "error_on_non_matrix=True; only matrices are normalised then"
                )
            paths.append(path)
            stats[_path_key(path)] = {
                "u": BatchStat(initializers.normal(1.0)(rngs.params(), (1, v.shape[-1]), param_dtype)),
                "sigma": BatchStat(jnp.ones((), param_dtype)),
            }
        if not paths:
            raise LayerError(f"{what}: the layer has no Param with two or more axes to normalise")
        self.paths = paths
        self.batch_stats = stats

    def __call__(self, *args: Any, update_stats: bool | None = None, **kwargs: Any) -> Any:
        if update_stats is None:
            update_stats = not self.use_running_average
        values = []
        for path in self.paths:
            param = _lookup(self.layer_instance, path)
            values.append((param, self._normalize(path, param.value, update_stats)))
        with _substituted(values):
            return self.layer_instance(*args, **kwargs)

    def _normalize(self, path: tuple, w: jax.Array, update_stats: bool) -> jax.Array:
        stats = self.batch_stats[_path_key(path)]
        matrix = jnp.reshape(w, (-1, w.shape[-1]))
        u = stats["u"].value
        for _ in range(self.n_steps):
            v = _l2_normalize(u @ matrix.T, None, self.epsilon)
            u = _l2_normalize(v @ matrix, None, self.epsilon)
        u, v = jax.lax.stop_gradient(u), jax.lax.stop_gradient(v)
        sigma = (v @ matrix @ u.T)[0, 0]
        normalized = jnp.reshape(matrix / jnp.where(sigma != 0, sigma, 1), w.shape)
        if update_stats:
            stats["u"].value = jnp.asarray(u, stats["u"].value.dtype)
            stats["sigma"].value = jnp.asarray(sigma, stats["sigma"].value.dtype)
        (normalized,) = promote_dtype(normalized, dtype=self.dtype or jnp.result_type(w, u, sigma))
        return normalized

