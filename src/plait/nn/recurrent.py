"""Recurrent layers: cells that take one time step, and ``RNN`` that runs a cell over a sequence.

A *cell* is a module called as ``cell(carry, x) -> (new_carry, y)`` on one time step
``x`` of shape ``[batch..., in_features]``; ``cell.initialize_carry(x.shape)`` makes the
carry it starts from. :class:`RNN` runs a cell over the time axis with :func:`plait.scan`,
and :class:`Bidirectional` runs one RNN forwards and another backwards.

How the cell's state travels through the scan: its ``Param`` Variables are broadcast to
every step (one value, read only), and the rest of its state, RNG streams above all, is
carried from step to step. So a cell that drops out (it holds a ``Dropout`` with a
reference to an ``Rngs``) draws a new key at every step, each step sees the counts the
previous one left, and the final counts come back to the caller's ``Rngs``, exactly as a
Python loop over the steps would behave. A step that writes a ``Param`` is refused by the
scan, as a broadcast value cannot hold a different write per step.

Example:
    >>> import jax.numpy as jnp, plait as nnx
    >>> rnn = nnx.RNN(nnx.LSTMCell(3, 4, rngs=nnx.Rngs(0)))
    >>> rnn(jnp.ones((2, 5, 3))).shape                     # (batch, time, hidden)
    (2, 5, 4)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp

from .. import initializers
from ..errors import LayerError, RngError
from ..filters import All, Filter
from ..module import Module
from ..rngs import Rngs, RngStream
from ..transforms import Carry, SameKeys, StateAxes, scan
from ..variables import Param, RngState
from .linear import NO_METADATA, Linear, check_rngs, keep_arguments, promote_dtype

__all__ = [
    "RNNCellBase",
    "SimpleCell",
    "LSTMCell",
    "OptimizedLSTMCell",
    "GRUCell",
    "RNN",
    "Bidirectional",
]

default_kernel_init = initializers.lecun_normal()
default_bias_init = initializers.zeros


def default_recurrent_kernel_init(key: jax.Array, shape: tuple, dtype: Any = jnp.float32) -> jax.Array:
    """Orthogonal, computed in float32 and then cast (QR is not defined for half precision)."""
    return initializers.orthogonal()(key, shape, jnp.float32).astype(dtype)


def _carry_key(rngs: Any) -> jax.Array | None:
    if rngs is None:
        return None
    if isinstance(rngs, Rngs):
        return rngs.carry()
    if isinstance(rngs, RngStream):
        return rngs()
    return rngs  # a key


def _kept_rngs(rngs: Rngs, keep_rngs: bool) -> RngStream | None:
    """What a cell keeps as ``self.rngs``: with ``keep_rngs``, a stream forked from the
    ``carry`` stream (or ``default``), as in the reference; else None."""
    return rngs.carry.fork() if keep_rngs else None


def _carry_stream(rngs: Any, layer: str) -> RngStream | None:
    """The stream an RNN draws initial carries from, as in the reference: a fixed seed
    (``True``), a fork of an ``Rngs``' ``carry`` stream, a given stream, or none (``False``)."""
    if rngs is True:
        return RngStream(0, tag="carry")
    if isinstance(rngs, Rngs):
        return rngs.carry.fork()
    if isinstance(rngs, RngStream):
        return rngs
    if rngs is False:
        return None
    raise LayerError(
        f"{layer}: rngs must be True (a carry stream seeded with 0), False (none), an nnx.Rngs or an "
        f"nnx.RngStream, got {type(rngs).__name__}. Write nnx.{layer}(..., rngs=nnx.Rngs(carry=0))"
    )


# Carry initializers that ignore their key: no key is drawn for them, so starting an RNN from
# zeros changes no RNG state (and a broadcast RNN stays legal under vmap and scan).
_KEYLESS = (initializers.zeros, initializers.ones)


class RNNCellBase(Module):
    """What :class:`RNN` needs of a cell: ``__call__``, ``initialize_carry``, ``num_feature_axes``."""

    hidden_features: int
    param_dtype: Any
    carry_init: Any

    def __call__(self, carry: Any, inputs: jax.Array) -> tuple[Any, jax.Array]:
        raise NotImplementedError

    def initialize_carry(self, input_shape: tuple[int, ...], rngs: Any = None, carry_init: Any = None) -> Any:
        """The carry to start from, for inputs of one time step of shape ``input_shape``.

        ``carry_init`` (default: the constructor's, zeros unless given) makes each part of
        the carry. An initializer that draws random numbers needs ``rngs`` (an ``Rngs``,
        whose ``carry`` stream, or ``default``, gives the key; an ``RngStream``; or a key);
        without it the cell's own ``rngs`` (kept with ``keep_rngs=True``) are used, so
        ``cell.initialize_carry(shape, cell.rngs)`` works either way.
        """
        raise NotImplementedError

    @property
    def num_feature_axes(self) -> int:
        """How many trailing axes of a time step are features (the rest are batch axes)."""
        return 1

    def _make_carry(self, input_shape: tuple[int, ...], rngs: Any, carry_init: Any, parts: int) -> list:
        init = carry_init if carry_init is not None else self.carry_init
        if rngs is None:
            rngs = getattr(self, "rngs", None)
        shape = tuple(input_shape)[:-1] + (self.hidden_features,)
        out = []
        for _ in range(parts):
            key = None if any(init is k for k in _KEYLESS) else _carry_key(rngs)
            try:
                out.append(init(key, shape, self.param_dtype))
            except Exception as e:
                if key is not None:
                    raise
                raise RngError(
                    f"{type(self).__name__}.initialize_carry: carry_init {getattr(init, '__name__', init)!r} "
                    "failed without a key; if it draws random numbers, give it one: "
                    "initialize_carry(shape, rngs=nnx.Rngs(carry=0)) or rnn(x, rngs=rngs)"
                ) from e
        return out


_METADATA = ("kernel_metadata", "recurrent_kernel_metadata", "bias_metadata")


def _dense(in_features: int, out_features: int, use_bias: bool, kernel_init: Any, bias_init: Any,
           dtype: Any, param_dtype: Any, rngs: Rngs, kernel_metadata: Mapping[str, Any],
           bias_metadata: Mapping[str, Any], promote_dtype: Callable[..., Any]) -> Linear:
    return Linear(in_features, out_features, use_bias=use_bias, kernel_init=kernel_init, bias_init=bias_init,
                  dtype=dtype, param_dtype=param_dtype, rngs=rngs, kernel_metadata=kernel_metadata,
                  bias_metadata=bias_metadata, promote_dtype=promote_dtype)


class SimpleCell(RNNCellBase):
    """The Elman cell: ``h' = activation_fn(W_i x + b + W_h h)`` (``+ h`` with ``residual``).

    The carry and the output are both ``h'``. Parameters: ``dense_i`` (input kernel and
    bias) and ``dense_h`` (recurrent kernel, no bias).

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> cell = nnx.SimpleCell(3, 4, rngs=nnx.Rngs(0))
        >>> h = cell.initialize_carry((2, 3))
        >>> h, y = cell(h, jnp.ones((2, 3)))
        >>> h.shape, bool((h == y).all())
        ((2, 4), True)
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        dtype: Any = jnp.float32,
        param_dtype: Any = jnp.float32,
        carry_init: Any = initializers.zeros,
        residual: bool = False,
        activation_fn: Callable[..., Any] = jnp.tanh,
        kernel_init: Any = default_kernel_init,
        recurrent_kernel_init: Any = default_recurrent_kernel_init,
        bias_init: Any = default_bias_init,
        promote_dtype: Callable[..., Any] = promote_dtype,
        keep_rngs: bool = False,
        rngs: Rngs,
        kernel_metadata: Mapping[str, Any] = NO_METADATA,
        recurrent_kernel_metadata: Mapping[str, Any] = NO_METADATA,
        bias_metadata: Mapping[str, Any] = NO_METADATA,
    ) -> None:
        check_rngs(rngs, "SimpleCell", "nnx.SimpleCell(in_features, hidden_features, rngs=nnx.Rngs(0))")
        keep_arguments(self, locals(), "kernel_init", "recurrent_kernel_init", "bias_init", *_METADATA)
        self.rngs = _kept_rngs(rngs, keep_rngs)
        self.dense_h = _dense(hidden_features, hidden_features, False, recurrent_kernel_init, bias_init,
                              dtype, param_dtype, rngs, recurrent_kernel_metadata, bias_metadata, promote_dtype)
        self.dense_i = _dense(in_features, hidden_features, True, kernel_init, bias_init, dtype, param_dtype, rngs,
                              kernel_metadata, bias_metadata, promote_dtype)

    def __call__(self, carry: jax.Array, inputs: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = self.dense_i(inputs) + self.dense_h(carry)
        if self.residual:
            h = h + carry
        h = self.activation_fn(h)
        return h, h

    def initialize_carry(self, input_shape: tuple[int, ...], rngs: Any = None, carry_init: Any = None) -> jax.Array:
        """``h``, of shape ``input_shape[:-1] + (hidden_features,)``; see :class:`RNNCellBase`."""
        return self._make_carry(input_shape, rngs, carry_init, 1)[0]


class LSTMCell(RNNCellBase):
    """Long short-term memory, one matrix per gate.

    With ``σ = gate_fn`` and ``φ = activation_fn``::

        i = σ(W_ii x + W_hi h + b_hi)      f = σ(W_if x + W_hf h + b_hf)
        g = φ(W_ig x + W_hg h + b_hg)      o = σ(W_io x + W_ho h + b_ho)
        c' = f * c + i * g                 h' = o * φ(c')

    The carry is ``(c, h)``; the output is ``h'``. Parameters: ``ii``, ``if_``, ``ig``,
    ``io`` (input kernels) and ``hi``, ``hf``, ``hg``, ``ho`` (recurrent kernels and the
    biases).

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> cell = nnx.LSTMCell(3, 4, rngs=nnx.Rngs(0))
        >>> (c, h), y = cell(cell.initialize_carry((2, 3)), jnp.ones((2, 3)))
        >>> c.shape, bool((h == y).all())
        ((2, 4), True)
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        gate_fn: Callable[..., Any] = jax.nn.sigmoid,
        activation_fn: Callable[..., Any] = jnp.tanh,
        kernel_init: Any = default_kernel_init,
        recurrent_kernel_init: Any = default_recurrent_kernel_init,
        bias_init: Any = default_bias_init,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        carry_init: Any = initializers.zeros,
        promote_dtype: Callable[..., Any] = promote_dtype,
        keep_rngs: bool = False,
        rngs: Rngs,
        kernel_metadata: Mapping[str, Any] = NO_METADATA,
        recurrent_kernel_metadata: Mapping[str, Any] = NO_METADATA,
        bias_metadata: Mapping[str, Any] = NO_METADATA,
    ) -> None:
        check_rngs(rngs, "LSTMCell", "nnx.LSTMCell(in_features, hidden_features, rngs=nnx.Rngs(0))")
        keep_arguments(self, locals(), "kernel_init", "recurrent_kernel_init", "bias_init", *_METADATA)
        self.rngs = _kept_rngs(rngs, keep_rngs)

        def dense_i() -> Linear:
            return _dense(in_features, hidden_features, False, kernel_init, bias_init, dtype, param_dtype, rngs,
                          kernel_metadata, bias_metadata, promote_dtype)

        def dense_h() -> Linear:  # input and recurrent terms are summed: one bias is enough
            return _dense(hidden_features, hidden_features, True, recurrent_kernel_init, bias_init,
                          dtype, param_dtype, rngs, recurrent_kernel_metadata, bias_metadata, promote_dtype)

        self.ii, self.if_, self.ig, self.io = dense_i(), dense_i(), dense_i(), dense_i()
        self.hi, self.hf, self.hg, self.ho = dense_h(), dense_h(), dense_h(), dense_h()

    def __call__(self, carry: tuple, inputs: jax.Array) -> tuple[tuple, jax.Array]:
        c, h = carry
        i = self.gate_fn(self.ii(inputs) + self.hi(h))
        f = self.gate_fn(self.if_(inputs) + self.hf(h))
        g = self.activation_fn(self.ig(inputs) + self.hg(h))
        o = self.gate_fn(self.io(inputs) + self.ho(h))
        c = f * c + i * g
        h = o * self.activation_fn(c)
        return (c, h), h

    def initialize_carry(self, input_shape: tuple[int, ...], rngs: Any = None, carry_init: Any = None) -> tuple:
        """``(c, h)``, each ``input_shape[:-1] + (hidden_features,)``; see :class:`RNNCellBase`."""
        c, h = self._make_carry(input_shape, rngs, carry_init, 2)
        return c, h


class OptimizedLSTMCell(RNNCellBase):
    """The :class:`LSTMCell` equations with the four gates in one matrix multiplication each.

    ``dense_i`` (``in_features -> 4 * hidden_features``, no bias) and ``dense_h``
    (``hidden_features -> 4 * hidden_features``, with the bias) hold the gates in the order
    ``i, f, g, o``. Usually faster than :class:`LSTMCell` for moderate hidden sizes.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> cell = nnx.OptimizedLSTMCell(3, 4, rngs=nnx.Rngs(0))
        >>> (c, h), y = cell(cell.initialize_carry((2, 3)), jnp.ones((2, 3)))
        >>> y.shape, cell.dense_h.kernel.value.shape
        ((2, 4), (4, 16))
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        gate_fn: Callable[..., Any] = jax.nn.sigmoid,
        activation_fn: Callable[..., Any] = jnp.tanh,
        kernel_init: Any = default_kernel_init,
        recurrent_kernel_init: Any = default_recurrent_kernel_init,
        bias_init: Any = default_bias_init,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        carry_init: Any = initializers.zeros,
        promote_dtype: Callable[..., Any] = promote_dtype,
        keep_rngs: bool = False,
        rngs: Rngs,
        kernel_metadata: Mapping[str, Any] = NO_METADATA,
        recurrent_kernel_metadata: Mapping[str, Any] = NO_METADATA,
        bias_metadata: Mapping[str, Any] = NO_METADATA,
    ) -> None:
        check_rngs(rngs, "OptimizedLSTMCell", "nnx.OptimizedLSTMCell(in_features, hidden_features, rngs=nnx.Rngs(0))")
        keep_arguments(self, locals(), "kernel_init", "recurrent_kernel_init", "bias_init", *_METADATA)
        self.rngs = _kept_rngs(rngs, keep_rngs)
        n = 4 * hidden_features
        self.dense_i = _dense(in_features, n, False, kernel_init, bias_init, dtype, param_dtype, rngs,
                              kernel_metadata, bias_metadata, promote_dtype)
        self.dense_h = _dense(hidden_features, n, True, recurrent_kernel_init, bias_init, dtype, param_dtype, rngs,
                              recurrent_kernel_metadata, bias_metadata, promote_dtype)

    def __call__(self, carry: tuple, inputs: jax.Array) -> tuple[tuple, jax.Array]:
        c, h = carry
        i, f, g, o = jnp.split(self.dense_i(inputs) + self.dense_h(h), 4, axis=-1)
        i, f, g, o = self.gate_fn(i), self.gate_fn(f), self.activation_fn(g), self.gate_fn(o)
        c = f * c + i * g
        h = o * self.activation_fn(c)
        return (c, h), h

    def initialize_carry(self, input_shape: tuple[int, ...], rngs: Any = None, carry_init: Any = None) -> tuple:
        """``(c, h)``, each ``input_shape[:-1] + (hidden_features,)``; see :class:`RNNCellBase`."""
        c, h = self._make_carry(input_shape, rngs, carry_init, 2)
        return c, h


class GRUCell(RNNCellBase):
    """Gated recurrent unit.

    With ``σ = gate_fn`` and ``φ = activation_fn``, and the input and recurrent terms
    each computed by one matrix (``dense_i``, with the bias, and ``dense_h``, without) and
    split in the order ``r, z, n``::

        r = σ(W_ir x + b_ir + W_hr h)      z = σ(W_iz x + b_iz + W_hz h)
        n = φ(W_in x + b_in + r * (W_hn h))
        h' = (1 - z) * n + z * h

    The carry and the output are both ``h'``.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> cell = nnx.GRUCell(3, 4, rngs=nnx.Rngs(0))
        >>> h, y = cell(cell.initialize_carry((2, 3)), jnp.ones((2, 3)))
        >>> y.shape, cell.dense_i.kernel.value.shape
        ((2, 4), (3, 12))
    """

    def __init__(
        self,
        in_features: int,
        hidden_features: int,
        *,
        gate_fn: Callable[..., Any] = jax.nn.sigmoid,
        activation_fn: Callable[..., Any] = jnp.tanh,
        kernel_init: Any = default_kernel_init,
        recurrent_kernel_init: Any = default_recurrent_kernel_init,
        bias_init: Any = default_bias_init,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        carry_init: Any = initializers.zeros,
        promote_dtype: Callable[..., Any] = promote_dtype,
        keep_rngs: bool = False,
        rngs: Rngs,
        kernel_metadata: Mapping[str, Any] = NO_METADATA,
        recurrent_kernel_metadata: Mapping[str, Any] = NO_METADATA,
        bias_metadata: Mapping[str, Any] = NO_METADATA,
    ) -> None:
        check_rngs(rngs, "GRUCell", "nnx.GRUCell(in_features, hidden_features, rngs=nnx.Rngs(0))")
        keep_arguments(self, locals(), "kernel_init", "recurrent_kernel_init", "bias_init", *_METADATA)
        self.rngs = _kept_rngs(rngs, keep_rngs)
        n = 3 * hidden_features
        self.dense_i = _dense(in_features, n, True, kernel_init, bias_init, dtype, param_dtype, rngs,
                              kernel_metadata, bias_metadata, promote_dtype)
        self.dense_h = _dense(hidden_features, n, False, recurrent_kernel_init, bias_init, dtype, param_dtype, rngs,
                              recurrent_kernel_metadata, bias_metadata, promote_dtype)

    def __call__(self, carry: jax.Array, inputs: jax.Array) -> tuple[jax.Array, jax.Array]:
        h = carry
        x_r, x_z, x_n = jnp.split(self.dense_i(inputs), 3, axis=-1)
        h_r, h_z, h_n = jnp.split(self.dense_h(h), 3, axis=-1)
        r = self.gate_fn(x_r + h_r)
        z = self.gate_fn(x_z + h_z)
        n = self.activation_fn(x_n + r * h_n)
        h = (1.0 - z) * n + z * h
        return h, h

    def initialize_carry(self, input_shape: tuple[int, ...], rngs: Any = None, carry_init: Any = None) -> jax.Array:
        """``h``, of shape ``input_shape[:-1] + (hidden_features,)``; see :class:`RNNCellBase`."""
        return self._make_carry(input_shape, rngs, carry_init, 1)[0]


# =======================================================================================
# Running a cell over a sequence
# =======================================================================================


def flip_sequences(inputs: jax.Array, seq_lengths: jax.Array | None, num_batch_dims: int, time_major: bool) -> jax.Array:
    """Reverse each sequence in time, keeping padding at the end.

    With ``seq_lengths`` (shape ``[batch...]``), sequence ``b`` has ``seq_lengths[b]`` real
    steps followed by padding; those steps are reversed in place and the padding stays
    after them. Without, the whole time axis is reversed.

    Example:
        >>> import jax.numpy as jnp
        >>> from plait.nn.recurrent import flip_sequences
        >>> x = jnp.array([[1, 0, 0], [2, 3, 0], [4, 5, 6]])
        >>> flip_sequences(x, jnp.array([1, 2, 3]), num_batch_dims=1, time_major=False).tolist()
        [[1, 0, 0], [3, 2, 0], [6, 5, 4]]
    """
    time_axis = 0 if time_major else num_batch_dims
    if seq_lengths is None:
        return jnp.flip(inputs, axis=time_axis)
    steps = inputs.shape[time_axis]
    # Step t of the flipped sequence reads step (L - 1 - t) mod T: a reversal of 0..L-1,
    # and the padding steps L..T-1 map among themselves.
    t = jnp.arange(steps)
    lengths = jnp.asarray(seq_lengths)
    if time_major:
        index = (lengths[None] - 1 - t.reshape((steps,) + (1,) * lengths.ndim)) % steps
    else:
        index = (lengths[..., None] - 1 - t) % steps
    index = index.reshape(index.shape + (1,) * (inputs.ndim - index.ndim))
    return jnp.take_along_axis(inputs, index, axis=time_axis)


def _step(cell: Module, carry: Any, x: Any, t: jax.Array, seq_lengths: jax.Array | None) -> tuple:
    new_carry, y = cell(carry, x)
    if seq_lengths is not None:
        # Past its end a sequence keeps its last carry and outputs zeros.
        valid = t < seq_lengths

        def where(new: jax.Array, old: jax.Array) -> jax.Array:
            v = valid.reshape(valid.shape + (1,) * (jnp.ndim(new) - valid.ndim))
            return jnp.where(v, new, old)

        new_carry = jax.tree.map(where, new_carry, carry)
        y = jax.tree.map(lambda a: where(a, jnp.zeros_like(a)), y)
    return new_carry, y


class RNN(Module):
    """Run a cell over the time axis of a sequence, built on :func:`plait.scan`.

    ``inputs`` is ``[batch..., time, features]`` (``[time, batch..., features]`` with
    ``time_major``); the outputs have the same layout with the cell's output features.
    ``reverse`` runs from the last step to the first (with ``seq_lengths``, from each
    sequence's last real step), and ``keep_order`` then puts the outputs back in input
    order. ``return_carry`` returns ``(final_carry, outputs)``.

    ``seq_lengths`` (shape ``[batch...]``) marks the real steps of padded sequences:
    after its last real step a sequence's carry stays as it was (so the final carry is the
    one after its last real step) and its outputs are zero.

    ``initial_carry`` defaults to ``cell.initialize_carry(...)``, given the call's ``rngs``,
    else the RNN's own stream: the constructor's ``rngs`` is ``True`` (a ``carry`` stream
    seeded with 0), an ``Rngs`` (its ``carry`` stream is forked), an ``RngStream``, or
    ``False`` (none). The default zeros carry draws no key.

    Randomness inside the cell (a dropout) comes from the cell's own streams and differs
    at every step; see the module docstring. ``broadcast_rngs`` (a filter, e.g.
    ``"dropout"``) picks RNG streams that give the *same* keys at every step of a call
    instead (one dropout mask for the whole sequence); they still advance once per call.
    ``state_axes`` (``{filter: None | nnx.Carry}``) replaces the default
    ``{nnx.Param: None, ...: nnx.Carry}``: how each part of the cell's state goes through
    the scan.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> rnn = nnx.RNN(nnx.GRUCell(3, 4, rngs=nnx.Rngs(0)), return_carry=True)
        >>> carry, ys = rnn(jnp.ones((2, 5, 3)), seq_lengths=jnp.array([5, 2]))
        >>> carry.shape, ys.shape, ys[1, 2:].tolist() == [[0.0] * 4] * 3     # past its end: zeros
        ((2, 4), (2, 5, 4), True)
    """

    def __init__(
        self,
        cell: RNNCellBase,
        *,
        time_major: bool = False,
        return_carry: bool = False,
        reverse: bool = False,
        keep_order: bool = False,
        unroll: int = 1,
        state_axes: Mapping[Filter, Any] | None = None,
        broadcast_rngs: Filter = None,
        rngs: Rngs | RngStream | bool = True,
    ) -> None:
        if not callable(cell) or not hasattr(cell, "initialize_carry"):
            raise LayerError(
                f"RNN expects a cell (a module with __call__(carry, x) and initialize_carry(shape)), "
                f"got {type(cell).__name__}. Write nnx.RNN(nnx.LSTMCell(in_features, hidden, rngs=rngs))"
            )
        self.cell = cell
        self.time_major = time_major
        self.return_carry = return_carry
        self.reverse = reverse
        self.keep_order = keep_order
        self.unroll = unroll
        # A StateAxes (hashable, static) rather than a dict: its keys are filters, not names.
        self.state_axes = None if state_axes is None or isinstance(state_axes, StateAxes) else StateAxes(state_axes)
        self.broadcast_rngs = broadcast_rngs
        self.rngs = _carry_stream(rngs, "RNN")

    def _cell_axes(self) -> StateAxes:
        """How the cell's state travels through the scan (see the module docstring)."""
        axes: dict = {}
        if self.broadcast_rngs is not None:
            # The same keys at every step (e.g. one dropout mask for the whole sequence);
            # the stream still advances once per call, so each call differs.
            axes[All(RngState, self.broadcast_rngs)] = SameKeys
        axes.update(self.state_axes.items() if self.state_axes is not None else {Param: None, ...: Carry})
        return StateAxes(axes)

    def __call__(
        self,
        inputs: jax.Array,
        *,
        initial_carry: Any = None,
        seq_lengths: jax.Array | None = None,
        return_carry: bool | None = None,
        time_major: bool | None = None,
        reverse: bool | None = None,
        keep_order: bool | None = None,
        rngs: Any = None,
    ) -> Any:
        return_carry = self.return_carry if return_carry is None else return_carry
        time_major = self.time_major if time_major is None else time_major
        reverse = self.reverse if reverse is None else reverse
        keep_order = self.keep_order if keep_order is None else keep_order

        n_features = getattr(self.cell, "num_feature_axes", 1)
        ndim = jnp.ndim(inputs)
        if ndim < n_features + 1:
            raise LayerError(
                f"RNN got inputs of shape {tuple(jnp.shape(inputs))}: expected "
                f"{'[time, batch..., features]' if time_major else '[batch..., time, features]'}, "
                "at least a time axis and the feature axis"
            )
        time_axis = 0 if time_major else ndim - n_features - 1
        batch_shape = inputs.shape[1 : ndim - n_features] if time_major else inputs.shape[:time_axis]
        if seq_lengths is not None:
            seq_lengths = jnp.asarray(seq_lengths)
            if tuple(seq_lengths.shape) != tuple(batch_shape):
                raise LayerError(
                    f"RNN: seq_lengths has shape {tuple(seq_lengths.shape)} but the inputs "
                    f"{tuple(inputs.shape)} have batch shape {tuple(batch_shape)}; give one length per sequence"
                )

        if reverse:
            inputs = flip_sequences(inputs, seq_lengths, len(batch_shape), time_major)
        if initial_carry is None:
            step_shape = inputs.shape[:time_axis] + inputs.shape[time_axis + 1 :]
            if rngs is None:
                rngs = getattr(self, "rngs", None)
            if isinstance(rngs, Rngs):
                rngs = rngs.carry
            initial_carry = self.cell.initialize_carry(step_shape, rngs)

        xs = jnp.moveaxis(inputs, time_axis, 0)
        steps = jnp.arange(xs.shape[0])
        run = scan(_step, in_axes=(self._cell_axes(), Carry, 0, 0, None), out_axes=(Carry, 0), unroll=self.unroll)
        carry, outputs = run(self.cell, initial_carry, xs, steps, seq_lengths)
        outputs = jax.tree.map(lambda y: jnp.moveaxis(y, 0, time_axis), outputs)

        if reverse and keep_order:
            outputs = jax.tree.map(lambda y: flip_sequences(y, seq_lengths, len(batch_shape), time_major), outputs)
        return (carry, outputs) if return_carry else outputs


def _concatenate(a: jax.Array, b: jax.Array) -> jax.Array:
    return jnp.concatenate([a, b], axis=-1)


class Bidirectional(Module):
    """Run ``forward_rnn`` forwards and ``backward_rnn`` backwards, and merge their outputs.

    The backward outputs are put back in input order before ``merge_fn`` (default:
    concatenate on the last axis) merges them with the forward ones. With
    ``return_carry`` the call returns ``((forward_carry, backward_carry), outputs)``;
    ``initial_carry`` is such a pair too.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> rngs = nnx.Rngs(0)
        >>> bi = nnx.Bidirectional(nnx.RNN(nnx.GRUCell(3, 4, rngs=rngs)), nnx.RNN(nnx.GRUCell(3, 4, rngs=rngs)))
        >>> bi(jnp.ones((2, 5, 3))).shape
        (2, 5, 8)
    """

    def __init__(
        self,
        forward_rnn: RNN,
        backward_rnn: RNN,
        *,
        merge_fn: Callable[[jax.Array, jax.Array], jax.Array] = _concatenate,
        time_major: bool = False,
        return_carry: bool = False,
        rngs: Rngs | RngStream | bool = True,
    ) -> None:
        self.rngs = _carry_stream(rngs, "Bidirectional")
        self.forward_rnn = forward_rnn
        self.backward_rnn = backward_rnn
        self.merge_fn = merge_fn
        self.time_major = time_major
        self.return_carry = return_carry

    def __call__(
        self,
        inputs: jax.Array,
        *,
        initial_carry: tuple[Any, Any] | None = None,
        rngs: Any = None,
        seq_lengths: jax.Array | None = None,
        return_carry: bool | None = None,
        time_major: bool | None = None,
        reverse: bool | None = None,
        keep_order: bool | None = None,
    ) -> Any:
        """Run both directions; ``reverse`` and ``keep_order`` are accepted and ignored."""
        time_major = self.time_major if time_major is None else time_major
        return_carry = self.return_carry if return_carry is None else return_carry
        if rngs is None:  # both directions draw their initial carries from one stream
            rngs = getattr(self, "rngs", None)
        if isinstance(rngs, Rngs):
            rngs = rngs.carry
        carry_f, carry_b = initial_carry if initial_carry is not None else (None, None)
        carry_f, out_f = self.forward_rnn(
            inputs, initial_carry=carry_f, rngs=rngs, seq_lengths=seq_lengths, return_carry=True,
            time_major=time_major, reverse=False,
        )
        carry_b, out_b = self.backward_rnn(
            inputs, initial_carry=carry_b, rngs=rngs, seq_lengths=seq_lengths, return_carry=True,
            time_major=time_major, reverse=True, keep_order=True,
        )
        outputs = jax.tree.map(self.merge_fn, out_f, out_b)
        return ((carry_f, carry_b), outputs) if return_carry else outputs
