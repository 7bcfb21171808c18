"""Convolutions: ``Conv`` and ``ConvTranspose``, channels last, any number of spatial axes.

Inputs are ``(*batch, *spatial, features)``. The number of spatial axes is
``len(kernel_size)``; whatever comes before them is batch, so one image ``(H, W, C)``,
a batch ``(N, H, W, C)`` and a batch of batches ``(A, B, H, W, C)`` all work, and the
output keeps the same batch axes.

Padding is ``'SAME'``, ``'VALID'``, ``'CIRCULAR'`` (wrap around: the input is a torus),
``'CAUSAL'`` (1-D ``Conv`` only: the output at step ``t`` sees inputs up to ``t``), an
int (that many zeros on both sides of every spatial axis) or one ``(low, high)`` pair or
int per spatial axis.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import initializers
from ..errors import LayerError
from ..module import Module
from ..rngs import Rngs
from ..variables import Param
from .linear import NO_METADATA, check_rngs, element_type, promote_dtype

__all__ = ["Conv", "ConvTranspose"]

default_kernel_init = initializers.lecun_normal()
default_bias_init = initializers.zeros

_PADDING_NAMES = ("SAME", "VALID", "CIRCULAR", "CAUSAL", "SAME_LOWER")


def canonicalize_padding(padding: Any, rank: int, what: str) -> str | list[tuple[int, int]]:
    """A padding name in capitals, or one ``(low, high)`` pair per spatial axis."""
    if isinstance(padding, str):
        name = padding.upper()
        if name not in _PADDING_NAMES:
            raise LayerError(
                f"{what}: unknown padding {padding!r}; use 'SAME', 'VALID', 'CIRCULAR', 'CAUSAL', an int, "
                f"or one int or (low, high) pair per spatial axis"
            )
        return name
    if isinstance(padding, (int, np.integer)):
        return [(int(padding), int(padding))] * rank
    if isinstance(padding, Sequence) and len(padding) == rank:
        pairs = []
        for p in padding:
            if isinstance(p, (int, np.integer)):
                pairs.append((int(p), int(p)))
            elif isinstance(p, Sequence) and len(p) == 2 and all(isinstance(q, (int, np.integer)) for q in p):
                pairs.append((int(p[0]), int(p[1])))
            else:
                break
        else:
            return pairs
    example = [(1, 1)] * rank
    raise LayerError(
        f"{what}: padding {padding!r} is not a padding for {rank} spatial axis(es); give a name ('SAME', ...), "
        f"an int, or {rank} int(s) or (low, high) pair(s), e.g. padding={example}"
    )


def _per_axis(value: Any, rank: int, name: str, what: str) -> tuple[int, ...]:
    if value is None:
        return (1,) * rank
    if isinstance(value, (int, np.integer)):
        return (int(value),) * rank
    value = tuple(int(v) for v in value)
    if len(value) != rank:
        raise LayerError(
            f"{what}: {name}={value} has {len(value)} entries but the kernel has {rank} spatial axis(es); "
            f"give an int or {rank} entries"
        )
    return value


def _dimension_numbers(rank: int) -> jax.lax.ConvDimensionNumbers:
    # Channels last for the inputs and outputs, kernel (*spatial, in, out).
    spatial = tuple(range(1, rank + 1))
    lhs = (0, rank + 1, *spatial)
    return jax.lax.ConvDimensionNumbers(lhs_spec=lhs, rhs_spec=(rank + 1, rank, *range(rank)), out_spec=lhs)


def _kernel_size(kernel_size: Any, what: str) -> tuple[int, ...]:
    if isinstance(kernel_size, (int, np.integer)):
        return (int(kernel_size),)
    kernel_size = tuple(int(k) for k in kernel_size)
    if not kernel_size or any(k < 1 for k in kernel_size):
        raise LayerError(f"{what}: kernel_size must be positive ints, one per spatial axis, got {kernel_size}")
    return kernel_size


def _flatten_batch(inputs: Any, layer: str, kernel_size: tuple, in_features: int) -> tuple[jax.Array, tuple]:
    """``(*batch, *spatial, C)`` -> ``(prod(batch), *spatial, C)`` and the batch shape."""
    rank = len(kernel_size)
    shape = tuple(jnp.shape(inputs))
    if len(shape) < rank + 1:
        raise LayerError(
            f"{layer} with kernel_size {kernel_size} takes inputs (*batch, {rank} spatial axis(es), features), "
            f"at least {rank + 1} axes, but got shape {shape}"
        )
    if shape[-1] != in_features:
        raise LayerError(
            f"{layer} got input of shape {shape}: its last axis holds the features and must be {in_features} "
            "(inputs are channels last)"
        )
    batch = shape[: len(shape) - rank - 1]
    return jnp.reshape(inputs, (int(np.prod(batch)), *shape[len(batch) :])), batch


def _check_mask(mask: Any, kernel_shape: tuple, what: str) -> None:
    if mask is not None and tuple(jnp.shape(mask)) != kernel_shape:
        raise LayerError(f"{what}: mask has shape {tuple(jnp.shape(mask))}, but the kernel has shape {kernel_shape}")


class Conv(Module):
    """A convolution over the spatial axes of channels-last inputs.

    ``kernel`` has shape ``(*kernel_size, in_features // feature_group_count,
    out_features)``; an int ``kernel_size`` means one spatial axis. ``strides``,
    ``input_dilation`` and ``kernel_dilation`` are an int or one per spatial axis.
    ``mask``, if given, multiplies the kernel on every call (masked convolutions).

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> conv = nnx.Conv(3, 8, kernel_size=(3, 3), rngs=nnx.Rngs(0))
        >>> conv.kernel.value.shape
        (3, 3, 3, 8)
        >>> conv(jnp.ones((2, 16, 16, 3))).shape
        (2, 16, 16, 8)
        >>> nnx.Conv(3, 8, (3, 3), strides=2, padding="VALID", rngs=nnx.Rngs(0))(jnp.ones((16, 16, 3))).shape
        (7, 7, 8)
        >>> nnx.Conv(1, 1, 3, padding="CAUSAL", rngs=nnx.Rngs(0))(jnp.ones((10, 1))).shape
        (10, 1)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] | None = 1,
        *,
        padding: Any = "SAME",
        input_dilation: int | Sequence[int] | None = 1,
        kernel_dilation: int | Sequence[int] | None = 1,
        feature_group_count: int = 1,
        use_bias: bool = True,
        mask: jax.Array | None = None,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        precision: Any = None,
        kernel_init: Any = default_kernel_init,
        bias_init: Any = default_bias_init,
        conv_general_dilated: Any = jax.lax.conv_general_dilated,
        promote_dtype: Callable[..., Any] = promote_dtype,
        preferred_element_type: Any = None,
        rngs: Rngs,
        kernel_metadata: Mapping[str, Any] = NO_METADATA,
        bias_metadata: Mapping[str, Any] = NO_METADATA,
    ) -> None:
        check_rngs(rngs, "Conv", "nnx.Conv(in_features, out_features, kernel_size=(3, 3), rngs=nnx.Rngs(0))")
        what = f"Conv({in_features}, {out_features})"
        kernel_size = _kernel_size(kernel_size, what)
        rank = len(kernel_size)
        if feature_group_count < 1 or in_features % feature_group_count or out_features % feature_group_count:
            raise LayerError(
                f"{what}: feature_group_count={feature_group_count} must divide both in_features ({in_features}) "
                f"and out_features ({out_features})"
            )
        for name, value in (("strides", strides), ("input_dilation", input_dilation), ("kernel_dilation", kernel_dilation)):
            _per_axis(value, rank, name, what)
        if canonicalize_padding(padding, rank, what) == "CAUSAL" and rank != 1:
            raise LayerError(
                f"{what}: padding='CAUSAL' is for one spatial axis (sequences), but kernel_size {kernel_size} has "
                f"{rank}; pad explicitly instead, e.g. padding=[(k - 1, 0), ...]"
            )
        kernel_shape = (*kernel_size, in_features // feature_group_count, out_features)
        _check_mask(mask, kernel_shape, what)
        self.kernel = Param(kernel_init(rngs.params(), kernel_shape, param_dtype), **kernel_metadata)
        if use_bias:
            self.bias = Param(bias_init(rngs.params(), (out_features,), param_dtype), **bias_metadata)
        else:
            self.bias = None
        self.in_features = in_features
        self.out_features = out_features
        self.kernel_size = kernel_size
        self.strides = strides
        self.padding = padding
        self.input_dilation = input_dilation
        self.kernel_dilation = kernel_dilation
        self.feature_group_count = feature_group_count
        self.use_bias = use_bias
        self.mask = mask
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.precision = precision
        self.conv_general_dilated = conv_general_dilated
        self.promote_dtype = promote_dtype
        self.preferred_element_type = preferred_element_type

    def __call__(self, inputs: jax.Array) -> jax.Array:
        what = f"Conv({self.in_features}, {self.out_features}, kernel_size={self.kernel_size})"
        rank = len(self.kernel_size)
        x, batch = _flatten_batch(inputs, what, self.kernel_size, self.in_features)
        strides = _per_axis(self.strides, rank, "strides", what)
        input_dilation = _per_axis(self.input_dilation, rank, "input_dilation", what)
        kernel_dilation = _per_axis(self.kernel_dilation, rank, "kernel_dilation", what)
        padding = canonicalize_padding(self.padding, rank, what)
        dilated = [(k - 1) * d + 1 for k, d in zip(self.kernel_size, kernel_dilation)]
        if padding == "CIRCULAR":
            # Wrap the input so a VALID convolution sees a torus; odd kernels are centred.
            x = jnp.pad(x, [(0, 0), *[((k - 1) // 2, k // 2) for k in dilated], (0, 0)], mode="wrap")
            padding = "VALID"
        elif padding == "CAUSAL":
            x = jnp.pad(x, [(0, 0), (dilated[0] - 1, 0), (0, 0)])
            padding = "VALID"
        elif isinstance(padding, str) and any(d > 1 for d in input_dilation):
            # XLA takes only explicit padding with a dilated input: spell the name out for it.
            size = [(n - 1) * d + 1 for n, d in zip(x.shape[1:-1], input_dilation)]
            padding = jax.lax.padtype_to_pads(size, dilated, strides, padding)
        kernel = self.kernel.value
        if self.mask is not None:
            kernel = kernel * self.mask
        x, kernel, bias = self.promote_dtype(
            (x, kernel, None if self.bias is None else self.bias.value), dtype=self.dtype
        )
        y = self.conv_general_dilated(
            x,
            kernel,
            strides,
            padding,
            lhs_dilation=input_dilation,
            rhs_dilation=kernel_dilation,
            dimension_numbers=_dimension_numbers(rank),
            feature_group_count=self.feature_group_count,
            precision=self.precision,
            **element_type(self.preferred_element_type),
        )
        if bias is not None:
            y = y + bias
        return jnp.reshape(y, batch + y.shape[1:])


class ConvTranspose(Module):
    """A transposed convolution ("deconvolution"): upsamples by ``strides``.

    With ``padding='SAME'`` each spatial axis of size ``n`` becomes ``n * stride``.
    Explicit padding pads the stride-dilated input, as ``jax.lax.conv_transpose`` does.
    ``padding='CIRCULAR'`` treats the output as periodic with period ``n * stride`` and
    wraps what falls off one edge onto the other.

    ``kernel`` has shape ``(*kernel_size, in_features, out_features)``. With
    ``transpose_kernel=True`` it is ``(*kernel_size, out_features, in_features)``, flipped
    spatially and used transposed: the layer then computes exactly the gradient (the
    adjoint) of a ``Conv`` with that kernel, the definition of a transposed convolution.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> up = nnx.ConvTranspose(4, 2, kernel_size=(3, 3), strides=2, rngs=nnx.Rngs(0))
        >>> up(jnp.ones((1, 5, 5, 4))).shape
        (1, 10, 10, 2)
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] | None = None,
        *,
        padding: Any = "SAME",
        kernel_dilation: int | Sequence[int] | None = None,
        use_bias: bool = True,
        mask: jax.Array | None = None,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        precision: Any = None,
        kernel_init: Any = default_kernel_init,
        bias_init: Any = default_bias_init,
        transpose_kernel: bool = False,
        promote_dtype: Callable[..., Any] = promote_dtype,
        preferred_element_type: Any = None,
        rngs: Rngs,
        kernel_metadata: Mapping[str, Any] = NO_METADATA,
        bias_metadata: Mapping[str, Any] = NO_METADATA,
    ) -> None:
        check_rngs(
            rngs, "ConvTranspose", "nnx.ConvTranspose(in_features, out_features, kernel_size=(3, 3), rngs=nnx.Rngs(0))"
        )
        what = f"ConvTranspose({in_features}, {out_features})"
        kernel_size = _kernel_size(kernel_size, what)
        rank = len(kernel_size)
        for name, value in (("strides", strides), ("kernel_dilation", kernel_dilation)):
            _per_axis(value, rank, name, what)
        if canonicalize_padding(padding, rank, what) == "CAUSAL":
            raise LayerError(
                f"{what}: padding='CAUSAL' is for Conv only; ConvTranspose takes 'SAME', 'VALID', 'CIRCULAR' "
                "or explicit padding"
            )
        if transpose_kernel:
            kernel_shape = (*kernel_size, out_features, in_features)
        else:
            kernel_shape = (*kernel_size, in_features, out_features)
        _check_mask(mask, kernel_shape, what)
        self.kernel = Param(kernel_init(rngs.params(), kernel_shape, param_dtype), **kernel_metadata)
        if use_bias:
            self.bias = Param(bias_init(rngs.params(), (out_features,), param_dtype), **bias_metadata)
        else:
            self.bias = None
        self.in_features = in_features
        self.out_features = out_features
        self.kernel_size = kernel_size
        self.strides = strides
        self.padding = padding
        self.kernel_dilation = kernel_dilation
        self.use_bias = use_bias
        self.mask = mask
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.precision = precision
        self.transpose_kernel = transpose_kernel
        self.promote_dtype = promote_dtype
        self.preferred_element_type = preferred_element_type

    def __call__(self, inputs: jax.Array) -> jax.Array:
        what = f"ConvTranspose({self.in_features}, {self.out_features}, kernel_size={self.kernel_size})"
        rank = len(self.kernel_size)
        x, batch = _flatten_batch(inputs, what, self.kernel_size, self.in_features)
        strides = _per_axis(self.strides, rank, "strides", what)
        kernel_dilation = _per_axis(self.kernel_dilation, rank, "kernel_dilation", what)
        padding = canonicalize_padding(self.padding, rank, what)
        circular = padding == "CIRCULAR"
        kernel = self.kernel.value
        if self.mask is not None:
            kernel = kernel * self.mask
        x, kernel, bias = self.promote_dtype(
            (x, kernel, None if self.bias is None else self.bias.value), dtype=self.dtype
        )
        y = jax.lax.conv_transpose(
            x,
            kernel,
            strides,
            "VALID" if circular else padding,
            rhs_dilation=kernel_dilation,
            dimension_numbers=_dimension_numbers(rank),
            transpose_kernel=self.transpose_kernel,
            precision=self.precision,
            preferred_element_type=self.preferred_element_type,
        )
        if circular:
            periods = [n * s for n, s in zip(x.shape[1:-1], strides)]
            dilated = [(k - 1) * d + 1 for k, d in zip(self.kernel_size, kernel_dilation)]
            if self.transpose_kernel:
                # The adjoint of Conv's wrap padding, which puts (K - 1) // 2 on the left.
                shifts = [(k - 1) // 2 for k in dilated]
            else:
                # Half the overhang on the left: agrees with 'SAME' away from the edges.
                shifts = [max(k - s, 0) // 2 for k, s in zip(dilated, strides)]
            y = _wrap_periodic(y, periods, shifts)
        if bias is not None:
            y = y + bias
        return jnp.reshape(y, batch + y.shape[1:])


def _wrap_periodic(y: jax.Array, periods: list[int], shifts: list[int]) -> jax.Array:
    """Fold each spatial axis of a VALID transposed convolution onto its period.

    The VALID output is longer than the period ``P``; output position ``m`` collects every
    ``y[j]`` with ``j = m + shift (mod P)``.
    """
    for axis, (period, shift) in enumerate(zip(periods, shifts), start=1):
        length = y.shape[axis]
        left = (-shift) % period  # y[j] lands at j + left, and (j + left) % P == (j - shift) % P
        right = (-(length + left)) % period
        pads = [(0, 0)] * y.ndim
        pads[axis] = (left, right)
        y = jnp.pad(y, pads)
        folded = y.shape[:axis] + ((length + left + right) // period, period) + y.shape[axis + 1 :]
        y = jnp.sum(jnp.reshape(y, folded), axis=axis)
    return y
