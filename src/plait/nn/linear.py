"""Dense layers: ``Linear``, ``LinearGeneral`` (several input/output axes) and ``Einsum``.

All three contract the inputs with a ``kernel`` Param and add an optional ``bias`` Param.
They share one dtype rule (:func:`promote_dtype`): ``param_dtype`` is what the parameters
are stored in; ``dtype``, if given, is what the computation and the output use, else the
inputs and parameters are promoted together (an integer input meets float parameters as
float).
"""

from __future__ import annotations

import string
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import initializers
from ..errors import LayerError
from ..module import Module
from ..rngs import Rngs
from ..variables import Param

__all__ = ["Linear", "LinearGeneral", "Einsum"]

default_kernel_init = initializers.lecun_normal()
default_bias_init = initializers.zeros

# The default of every ``*_metadata`` keyword: metadata given to a created Param as
# ``Param(value, **metadata)`` (e.g. ``{"sharding_names": ("embed", "mlp")}``).
NO_METADATA: Mapping[str, Any] = MappingProxyType({})


def promote_dtype(*arrays: Any, dtype: Any = None, inexact: bool = True) -> Any:
    """Cast ``arrays`` (``None`` passes through) to ``dtype``, or to their common dtype
    (made inexact, unless ``inexact=False``).

    The layers of ``plait.nn`` use this one rule so that ``dtype``/``param_dtype`` mean the
    same thing everywhere. Every layer that promotes takes it as its ``promote_dtype``
    keyword and calls it as the reference does, with one tuple (``promote_dtype((x, kernel,
    bias), dtype=dtype)``, which returns a tuple), so a replacement written for Flax NNX
    works here; given the arrays one by one it returns a list.

    Example:
        >>> import jax.numpy as jnp
        >>> from plait.nn.linear import promote_dtype
        >>> x, w = promote_dtype((jnp.ones(2, jnp.bfloat16), jnp.ones(2)), dtype=None)
        >>> x.dtype, w.dtype
        (dtype('float32'), dtype('float32'))
    """
    as_tuple = len(arrays) == 1 and isinstance(arrays[0], tuple)
    items = arrays[0] if as_tuple else arrays
    if dtype is None:
        dtype = jnp.result_type(*[a for a in items if a is not None])
        if inexact and not jnp.issubdtype(dtype, jnp.inexact):
            dtype = jnp.promote_types(dtype, jnp.float32)
    out = [None if a is None else jnp.asarray(a, dtype) for a in items]
    return tuple(out) if as_tuple else out


def element_type(preferred_element_type: Any) -> dict[str, Any]:
    """``{"preferred_element_type": t}`` when one is set, else ``{}``, as the reference passes it:
    a custom ``dot_general``/``einsum_op``/``conv_general_dilated`` need not take the keyword."""
    return {} if preferred_element_type is None else {"preferred_element_type": preferred_element_type}


def check_rngs(rngs: Any, layer: str, example: str) -> None:
    """The error every layer gives when built without ``rngs``."""
    if not isinstance(rngs, Rngs):
        raise LayerError(
            f"{layer} needs rngs=nnx.Rngs(...) to initialise its parameters, got {type(rngs).__name__}.\n"
            f"Write {example}"
        )


def keep_arguments(layer: Module, arguments: dict[str, Any], *used_once: str) -> None:
    """Keep a layer's constructor arguments as attributes of the same names, as Flax NNX
    layers do: all but ``self``, ``rngs`` and ``used_once`` (the parameter initializers).

    Call it in ``__init__`` with ``locals()`` before any other local is assigned, so that
    ``locals()`` holds the arguments only.
    """
    for name, value in arguments.items():
        if name not in ("self", "rngs", "__class__") and name not in used_once:
            setattr(layer, name, value)


class Linear(Module):
    """A dense layer over the last axis: ``y = x @ kernel + bias``.

    ``kernel`` has shape ``(in_features, out_features)``. ``param_dtype`` is the dtype of the
    parameters; ``dtype`` (if given) is the dtype of the computation, else the inputs and
    parameters are promoted together (by ``promote_dtype``, replaceable as in the
    reference). ``dot_general`` (default ``jax.lax.dot_general``) does the product, given
    ``preferred_element_type`` when that is set (e.g. ``jnp.float32`` accumulation and
    output for bfloat16 operands). ``kernel_metadata``/``bias_metadata`` become the Params'
    metadata.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> layer = nnx.Linear(3, 4, rngs=nnx.Rngs(0))
        >>> layer(jnp.ones((2, 3))).shape, layer.kernel.value.shape
        ((2, 4), (3, 4))
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        use_bias: bool = True,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        precision: Any = None,
        kernel_init: Any = default_kernel_init,
        bias_init: Any = default_bias_init,
        dot_general: Any = jax.lax.dot_general,
        promote_dtype: Callable[..., Any] = promote_dtype,
        preferred_element_type: Any = None,
        rngs: Rngs,
        kernel_metadata: Mapping[str, Any] = NO_METADATA,
        bias_metadata: Mapping[str, Any] = NO_METADATA,
    ) -> None:
        check_rngs(rngs, "Linear", "nnx.Linear(in_features, out_features, rngs=nnx.Rngs(0))")
        self.kernel = Param(kernel_init(rngs.params(), (in_features, out_features), param_dtype), **kernel_metadata)
        if use_bias:
            self.bias = Param(bias_init(rngs.params(), (out_features,), param_dtype), **bias_metadata)
        else:
            self.bias = None
        keep_arguments(self, locals(), "kernel_init", "bias_init", "kernel_metadata", "bias_metadata")

    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.kernel.value
        bias = self.bias.value if self.bias is not None else None
        if jnp.shape(x)[-1:] != (self.in_features,):
            raise LayerError(
                f"Linear({self.in_features}, {self.out_features}) got input of shape {tuple(jnp.shape(x))}: "
                f"its last axis must be {self.in_features}"
            )
        x, kernel, bias = self.promote_dtype((x, kernel, bias), dtype=self.dtype)
        y = self.dot_general(
            x, kernel, (((x.ndim - 1,), (0,)), ((), ())), precision=self.precision,
            **element_type(self.preferred_element_type),
        )
        if bias is not None:
            y = y + bias
        return y


def _as_tuple(x: int | Sequence[int]) -> tuple[int, ...]:
    return (x,) if isinstance(x, (int, np.integer)) else tuple(x)


class LinearGeneral(Module):
    """A dense layer over several input axes into several output axes.

    The input axes ``axis`` (of sizes ``in_features``) are contracted with a kernel of
    shape ``in_features + out_features``; the other input axes stay, in order, and the
    ``out_features`` axes are appended. The kernel is initialised as the matrix
    ``(prod(in_features), prod(out_features))`` and reshaped, so ``lecun_normal`` sees the
    true fan-in.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> layer = nnx.LinearGeneral((2, 3), (4, 5), axis=(-2, -1), rngs=nnx.Rngs(0))
        >>> layer.kernel.value.shape, layer.bias.value.shape
        ((2, 3, 4, 5), (4, 5))
        >>> layer(jnp.ones((7, 2, 3))).shape
        (7, 4, 5)
    """

    def __init__(
        self,
        in_features: int | Sequence[int],
        out_features: int | Sequence[int],
        *,
        axis: int | Sequence[int] = -1,
        use_bias: bool = True,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        kernel_init: Any = default_kernel_init,
        bias_init: Any = default_bias_init,
        precision: Any = None,
        dot_general: Any = None,
        dot_general_cls: Any = None,
        promote_dtype: Callable[..., Any] = promote_dtype,
        preferred_element_type: Any = None,
        batch_axis: Mapping[int, int] = MappingProxyType({}),
        rngs: Rngs,
        kernel_metadata: Mapping[str, Any] = NO_METADATA,
        bias_metadata: Mapping[str, Any] = NO_METADATA,
    ) -> None:
        check_rngs(rngs, "LinearGeneral", "nnx.LinearGeneral(in_features, out_features, rngs=nnx.Rngs(0))")
        if batch_axis:
            raise LayerError(
                f"LinearGeneral: batch_axis={dict(batch_axis)} (a kernel per batch index) is not supported by plait.\n"
                "Stack one layer per batch index with nnx.vmap instead, and map the inputs' batch axis:\n"
                "    layers = nnx.split_rngs(splits=n)(nnx.vmap(lambda r: nnx.LinearGeneral(..., rngs=r), axis_size=n))(rngs)\n"
                "    y = nnx.vmap(lambda layer, x: layer(x), in_axes=(0, batch_axis))(layers, x)"
            )
        in_features, out_features, axis = _as_tuple(in_features), _as_tuple(out_features), _as_tuple(axis)
        if len(axis) != len(in_features):
            suggestion = tuple(range(-len(in_features), 0))
            raise LayerError(
                f"LinearGeneral: in_features {in_features} has {len(in_features)} entries but axis {axis} has "
                f"{len(axis)}; give one input axis per entry, e.g. axis={suggestion}"
            )
        if len(set(axis)) != len(axis):
            raise LayerError(f"LinearGeneral: axis {axis} repeats an axis")
        n_in, n_out = int(np.prod(in_features)), int(np.prod(out_features))
        kernel = kernel_init(rngs.params(), (n_in, n_out), param_dtype)
        self.kernel = Param(jnp.reshape(kernel, in_features + out_features), **kernel_metadata)
        if use_bias:
            self.bias = Param(jnp.reshape(bias_init(rngs.params(), (n_out,), param_dtype), out_features), **bias_metadata)
        else:
            self.bias = None
        self.in_features = in_features
        self.out_features = out_features
        self.axis = axis
        self.use_bias = use_bias
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.precision = precision
        self.dot_general = dot_general
        self.dot_general_cls = dot_general_cls
        self.promote_dtype = promote_dtype
        self.preferred_element_type = preferred_element_type

    def __call__(self, inputs: jax.Array) -> jax.Array:
        ndim = jnp.ndim(inputs)
        shape = tuple(jnp.shape(inputs))
        if any(not -ndim <= a < ndim for a in self.axis):
            raise LayerError(
                f"LinearGeneral(in_features={self.in_features}) contracts axes {self.axis}, but its input of shape "
                f"{shape} has only {ndim} axes"
            )
        axis = tuple(a % ndim for a in self.axis)
        got = tuple(shape[a] for a in axis)
        if got != self.in_features:
            raise LayerError(
                f"LinearGeneral(in_features={self.in_features}) got input of shape {shape}: its axes {self.axis} "
                f"have sizes {got}, expected {self.in_features}"
            )
        x, kernel, bias = self.promote_dtype(
            (inputs, self.kernel.value, None if self.bias is None else self.bias.value), dtype=self.dtype
        )
        dims = ((axis, tuple(range(len(axis)))), ((), ()))
        # As in the reference: an instance of dot_general_cls, else dot_general, else lax's.
        if self.dot_general_cls is not None:
            dot_general = self.dot_general_cls()
        else:
            dot_general = self.dot_general or jax.lax.dot_general
        y = dot_general(x, kernel, dims, precision=self.precision, **element_type(self.preferred_element_type))
        if bias is not None:
            y = y + bias
        return y


def _expand_ellipses(equation: str, ndims: tuple[int, int]) -> str:
    """Spell out ``...`` in a two-operand einsum as letters the equation does not use.

    Ellipsis axes are right-aligned across operands (numpy broadcasting); the output's
    ``...`` gets all of them.
    """
    if "..." not in equation:
        return equation
    operands, out = equation.split("->")
    terms = operands.split(",")
    counts = [n - (len(t) - 3) if "..." in t else 0 for t, n in zip(terms, ndims)]
    free = [c for c in string.ascii_letters if c not in equation]
    letters = "".join(free[: max(counts)])
    terms = [t.replace("...", letters[len(letters) - c :]) for t, c in zip(terms, counts)]
    return f"{terms[0]},{terms[1]}->{out.replace('...', letters)}"


class Einsum(Module):
    """``y = einsum(einsum_str, inputs, kernel) + bias`` with a learned ``kernel``.

    ``einsum_str`` names two operands, the inputs then the kernel, and the output
    explicitly (``"...d,dhk->...hk"``). The bias (if ``bias_shape`` is given) is added to
    the output axes that come from the kernel: its size must be the product of those axes.
    A different ``einsum_str`` can be given per call.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> layer = nnx.Einsum("btd,dhk->bthk", (8, 2, 4), (2, 4), rngs=nnx.Rngs(0))
        >>> layer(jnp.ones((3, 5, 8))).shape
        (3, 5, 2, 4)
    """

    def __init__(
        self,
        einsum_str: str,
        kernel_shape: Sequence[int],
        bias_shape: Sequence[int] | None = None,
        *,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        precision: Any = None,
        kernel_init: Any = default_kernel_init,
        bias_init: Any = default_bias_init,
        einsum_op: Any = jnp.einsum,
        promote_dtype: Callable[..., Any] = promote_dtype,
        preferred_element_type: Any = None,
        rngs: Rngs,
        kernel_metadata: Mapping[str, Any] = NO_METADATA,
        bias_metadata: Mapping[str, Any] = NO_METADATA,
    ) -> None:
        check_rngs(rngs, "Einsum", 'nnx.Einsum("bd,df->bf", (4, 8), rngs=nnx.Rngs(0))')
        einsum_str = self._check_equation(einsum_str)
        kernel_shape = tuple(kernel_shape)
        self.kernel = Param(kernel_init(rngs.params(), kernel_shape, param_dtype), **kernel_metadata)
        if bias_shape is not None:
            bias_shape = tuple(bias_shape)
            self.bias = Param(bias_init(rngs.params(), bias_shape, param_dtype), **bias_metadata)
        else:
            self.bias = None
        self.einsum_str = einsum_str
        self.kernel_shape = kernel_shape
        self.bias_shape = bias_shape
        self.dtype = dtype
        self.param_dtype = param_dtype
        self.precision = precision
        self.einsum_op = einsum_op
        self.promote_dtype = promote_dtype
        self.preferred_element_type = preferred_element_type

    @staticmethod
    def _check_equation(einsum_str: Any) -> str:
        if not isinstance(einsum_str, str):
            raise TypeError(f"Einsum: einsum_str must be a string like 'bd,df->bf', got {type(einsum_str).__name__}")
        equation = einsum_str.replace(" ", "")
        if "->" not in equation:
            raise LayerError(
                f"Einsum: {einsum_str!r} does not name its output; write it explicitly with '->', e.g. 'bd,df->bf'"
            )
        if equation.count(",") != 1:
            raise LayerError(
                f"Einsum: {einsum_str!r} must have exactly two operands (the inputs, then the kernel), "
                f"e.g. 'bd,df->bf'"
            )
        return equation

    def __call__(self, inputs: jax.Array, einsum_str: str | None = None) -> jax.Array:
        equation = self.einsum_str if einsum_str is None else self._check_equation(einsum_str)
        x, kernel, bias = self.promote_dtype(
            (inputs, self.kernel.value, None if self.bias is None else self.bias.value), dtype=self.dtype
        )
        y = self.einsum_op(equation, x, kernel, precision=self.precision, **element_type(self.preferred_element_type))
        if bias is not None:
            y = y + jnp.reshape(bias, self._bias_broadcast_shape(equation, x.ndim, kernel.shape))
        return y

    def _bias_broadcast_shape(self, equation: str, x_ndim: int, kernel_shape: tuple) -> tuple[int, ...]:
        # The bias runs along the output axes the kernel contributes: everything else is 1.
        spelled = _expand_ellipses(equation, (x_ndim, len(kernel_shape)))
        operands, out = spelled.split("->")
        kernel_labels = operands.split(",")[1]
        shape = tuple(kernel_shape[kernel_labels.index(c)] if c in kernel_labels else 1 for c in out)
        if int(np.prod(shape)) != int(np.prod(self.bias_shape)):
            kept = "".join(c for c in out if c in kernel_labels)
            raise LayerError(
                f"Einsum({equation!r}): bias_shape {self.bias_shape} does not fit the output axes '{kept}' that "
                f"come from the kernel, of sizes {tuple(d for d in shape if d != 1) or ()}; "
                "give bias_shape those sizes"
            )
        return shape
