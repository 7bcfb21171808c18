"""Tests for the recurrent cells, RNN and Bidirectional."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plait as nnx

B, T, IN, H = 2, 5, 3, 4  # batch, time, input features, hidden features
RNG = np.random.RandomState(0)


def np_init(key, shape, dtype=jnp.float32):
    """Random weights from NumPy: no JAX random compile per shape, which keeps the tests fast."""
    return jnp.asarray(0.5 * RNG.randn(*shape), dtype)


def _cell(cls, **kwargs):
    return cls(IN, H, kernel_init=np_init, recurrent_kernel_init=np_init, bias_init=np_init, rngs=nnx.Rngs(0),
               **kwargs)


def _x(*shape):
    return RNG.randn(*(shape or (B, T, IN))).astype(np.float32)


def _np(v):
    return np.asarray(v.value, np.float64)


def np_sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# =======================================================================================
# Each cell against its equations
# =======================================================================================


def np_simple_step(cell, h, x):
    return np.tanh(x @ _np(cell.dense_i.kernel) + _np(cell.dense_i.bias) + h @ _np(cell.dense_h.kernel))


def np_lstm_step(cell, carry, x):
    c, h = carry

    def gate(i, hh):
        return x @ _np(i.kernel) + h @ _np(hh.kernel) + _np(hh.bias)

    i = np_sigmoid(gate(cell.ii, cell.hi))
    f = np_sigmoid(gate(cell.if_, cell.hf))
    g = np.tanh(gate(cell.ig, cell.hg))
    o = np_sigmoid(gate(cell.io, cell.ho))
    c = f * c + i * g
    return c, o * np.tanh(c)


def np_optimized_lstm_step(cell, carry, x):
    c, h = carry
    z = x @ _np(cell.dense_i.kernel) + h @ _np(cell.dense_h.kernel) + _np(cell.dense_h.bias)
    i, f, g, o = z[..., :H], z[..., H : 2 * H], z[..., 2 * H : 3 * H], z[..., 3 * H :]
    c = np_sigmoid(f) * c + np_sigmoid(i) * np.tanh(g)
    return c, np_sigmoid(o) * np.tanh(c)


def np_gru_step(cell, h, x):
    xi = x @ _np(cell.dense_i.kernel) + _np(cell.dense_i.bias)
    hh = h @ _np(cell.dense_h.kernel)
    r = np_sigmoid(xi[..., :H] + hh[..., :H])
    z = np_sigmoid(xi[..., H : 2 * H] + hh[..., H : 2 * H])
    n = np.tanh(xi[..., 2 * H :] + r * hh[..., 2 * H :])
    return (1 - z) * n + z * h


def _close(a, b, tol=1e-5):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


def test_simple_cell_step_matches_numpy():
    cell = _cell(nnx.SimpleCell)
    h, x = _x(B, H), _x(B, IN)
    new, y = cell(jnp.asarray(h), jnp.asarray(x))
    _close(new, np_simple_step(cell, h, x))
    _close(y, new)
    residual = _cell(nnx.SimpleCell, residual=True)
    new, _ = residual(jnp.asarray(h), jnp.asarray(x))
    h_pre = np.arctanh(np.clip(np_simple_step(residual, h, x), -1 + 1e-7, 1 - 1e-7))
    _close(new, np.tanh(h_pre + h), 1e-4)


def test_lstm_cell_step_matches_numpy():
    cell = _cell(nnx.LSTMCell)
    carry, x = (_x(B, H), _x(B, H)), _x(B, IN)
    (c, h), y = cell(jax.tree.map(jnp.asarray, carry), jnp.asarray(x))
    _close((c, h), np_lstm_step(cell, carry, x))
    _close(y, h)


def test_optimized_lstm_cell_step_matches_numpy():
    cell = _cell(nnx.OptimizedLSTMCell)
    assert cell.dense_i.kernel.value.shape == (IN, 4 * H) and cell.dense_i.bias is None
    carry, x = (_x(B, H), _x(B, H)), _x(B, IN)
    (c, h), y = cell(jax.tree.map(jnp.asarray, carry), jnp.asarray(x))
    _close((c, h), np_optimized_lstm_step(cell, carry, x))
    _close(y, h)


def test_gru_cell_step_matches_numpy():
    cell = _cell(nnx.GRUCell)
    assert cell.dense_h.kernel.value.shape == (H, 3 * H) and cell.dense_h.bias is None
    h, x = _x(B, H), _x(B, IN)
    new, y = cell(jnp.asarray(h), jnp.asarray(x))
    _close(new, np_gru_step(cell, h, x))
    _close(y, new)


def test_cells_take_custom_gate_and_activation_functions():
    cell = _cell(nnx.GRUCell, gate_fn=jax.nn.hard_sigmoid, activation_fn=jax.nn.relu)
    h, x = _x(B, H), _x(B, IN)
    xi = x @ _np(cell.dense_i.kernel) + _np(cell.dense_i.bias)
    hh = h @ _np(cell.dense_h.kernel)

    def hard_sigmoid(v):
        return np.clip(v + 3, 0, 6) / 6

    r, z = hard_sigmoid(xi[..., :H] + hh[..., :H]), hard_sigmoid(xi[..., H : 2 * H] + hh[..., H : 2 * H])
    n = np.maximum(xi[..., 2 * H :] + r * hh[..., 2 * H :], 0)
    _close(cell(jnp.asarray(h), jnp.asarray(x))[0], (1 - z) * n + z * h)


def test_default_initialisation():
    cell = nnx.SimpleCell(IN, H, rngs=nnx.Rngs(0))
    k = np.asarray(cell.dense_h.kernel.value)
    np.testing.assert_allclose(k @ k.T, np.eye(H), atol=1e-5)  # orthogonal recurrent kernel
    np.testing.assert_array_equal(np.asarray(cell.dense_i.bias.value), np.zeros(H))
    assert cell.dense_h.bias is None  # input and recurrent terms share one bias
    assert np.asarray(cell.dense_i.kernel.value).std() > 0


def test_dtypes():
    step = nnx.jit(lambda cell, h, x: cell(h, x)[1])
    cell = _cell(nnx.GRUCell, param_dtype=jnp.bfloat16)
    assert cell.dense_i.kernel.value.dtype == jnp.bfloat16
    h = cell.initialize_carry((B, IN))
    assert h.dtype == jnp.bfloat16  # the carry has the parameters' dtype
    assert step(cell, h, jnp.ones((B, IN), jnp.bfloat16)).dtype == jnp.bfloat16
    cell = _cell(nnx.GRUCell, param_dtype=jnp.bfloat16, dtype=jnp.float32)
    assert step(cell, jnp.zeros((B, H)), jnp.ones((B, IN), jnp.bfloat16)).dtype == jnp.float32


def test_initialize_carry():
    for cls, n in [(nnx.SimpleCell, 1), (nnx.GRUCell, 1), (nnx.LSTMCell, 2), (nnx.OptimizedLSTMCell, 2)]:
        carry = _cell(cls).initialize_carry((B, 7, IN))
        leaves = jax.tree.leaves(carry)
        assert len(leaves) == n
        assert all(leaf.shape == (B, 7, H) and not np.asarray(leaf).any() for leaf in leaves)

    cell = _cell(nnx.LSTMCell, carry_init=nnx.initializers.normal(1.0))
    with pytest.raises(nnx.RngError, match="rngs=nnx.Rngs"):
        cell.initialize_carry((B, IN))
    c, h = cell.initialize_carry((B, IN), rngs=nnx.Rngs(carry=0))
    assert c.shape == (B, H) and np.asarray(c).std() > 0 and not np.allclose(np.asarray(c), np.asarray(h))
    ones = _cell(nnx.GRUCell).initialize_carry((B, IN), carry_init=nnx.initializers.ones)
    np.testing.assert_array_equal(np.asarray(ones), np.ones((B, H)))


def test_cells_need_rngs():
    with pytest.raises(nnx.PlaitError, match=r"rngs=nnx.Rngs"):
        nnx.GRUCell(IN, H, rngs=None)


# =======================================================================================
# RNN: a scan over the cell
# =======================================================================================


def python_loop(cell, x, carry=None, lengths=None):
    """The cell run step by step over axis 1 of x (batch-major), as an RNN should."""
    carry = cell.initialize_carry(x[:, 0].shape) if carry is None else carry
    ys = []
    for t in range(x.shape[1]):
        new, y = cell(carry, jnp.asarray(x[:, t]))
        if lengths is not None:
            valid = jnp.asarray(t < lengths)[:, None]
            new = jax.tree.map(lambda a, b, valid=valid: jnp.where(valid, a, b), new, carry)
            y = jnp.where(valid, y, 0.0)
        carry = new
        ys.append(y)
    return carry, jnp.stack(ys, axis=1)


@pytest.mark.parametrize("cls", [nnx.SimpleCell, nnx.LSTMCell, nnx.OptimizedLSTMCell, nnx.GRUCell])
def test_rnn_equals_a_python_loop_over_the_cell(cls):
    cell = _cell(cls)
    x = _x()
    carry, ys = nnx.RNN(cell, return_carry=True)(jnp.asarray(x))
    assert ys.shape == (B, T, H)
    ref_carry, ref_ys = python_loop(cell, x)
    _close(ys, ref_ys)
    _close(carry, ref_carry)


def test_rnn_time_major_return_carry_and_initial_carry():
    cell = _cell(nnx.GRUCell)
    x = _x()
    h0 = jnp.asarray(_x(B, H))
    ref_carry, ref_ys = python_loop(cell, x, carry=h0)
    rnn = nnx.RNN(cell, time_major=True)
    ys = rnn(jnp.asarray(x.transpose(1, 0, 2)), initial_carry=h0)
    assert ys.shape == (T, B, H)
    _close(ys.transpose(1, 0, 2), ref_ys)
    carry, ys = rnn(jnp.asarray(x), initial_carry=h0, time_major=False, return_carry=True)
    _close(carry, ref_carry)
    _close(ys, ref_ys)
    # unbatched input: [time, features]
    _close(nnx.RNN(cell)(jnp.asarray(x[0]), initial_carry=h0[0]), ref_ys[0])


def test_rnn_reverse_and_keep_order():
    cell = _cell(nnx.LSTMCell)
    x = _x()
    ref_carry, ref_ys = python_loop(cell, x[:, ::-1])
    carry, ys = nnx.RNN(cell, reverse=True, return_carry=True)(jnp.asarray(x))
    _close(carry, ref_carry)
    _close(ys, ref_ys)  # outputs in the order they were computed
    ys = nnx.RNN(cell, reverse=True, keep_order=True)(jnp.asarray(x))
    _close(ys, np.asarray(ref_ys)[:, ::-1])  # outputs aligned with the inputs


def test_rnn_seq_lengths_freeze_the_carry_and_zero_the_outputs():
    cell = _cell(nnx.GRUCell)
    x = _x()
    lengths = np.array([T, 2])
    carry, ys = nnx.RNN(cell, return_carry=True)(jnp.asarray(x), seq_lengths=jnp.asarray(lengths))
    for b, n in enumerate(lengths):
        ref_carry, ref_ys = python_loop(cell, x[b : b + 1, :n])
        _close(carry[b], ref_carry[0])  # the carry after the sequence's last real step
        _close(ys[b, :n], ref_ys[0])
        assert not np.asarray(ys[b, n:]).any()
    # the same with the padding masked inside the loop
    _close((carry, ys), python_loop(cell, x, lengths=lengths))


def test_rnn_reverse_with_seq_lengths_reverses_only_the_real_steps():
    cell = _cell(nnx.GRUCell)
    x = _x()
    lengths = np.array([T, 3])
    rnn = nnx.RNN(cell, reverse=True, keep_order=True, return_carry=True)
    carry, ys = rnn(jnp.asarray(x), seq_lengths=jnp.asarray(lengths))
    for b, n in enumerate(lengths):
        ref_carry, ref_ys = python_loop(cell, x[b : b + 1, :n][:, ::-1])
        _close(carry[b], ref_carry[0])
        _close(ys[b, :n], np.asarray(ref_ys[0])[::-1])
        assert not np.asarray(ys[b, n:]).any()


def test_rnn_under_jit_and_grad_matches_the_loop():
    cell = _cell(nnx.SimpleCell)
    rnn = nnx.RNN(cell, unroll=2)
    x = jnp.asarray(_x())
    _close(nnx.jit(lambda m, x: m(x))(rnn, x), python_loop(cell, x)[1])
    grads = nnx.jit(nnx.grad(lambda m, x: (m(x) ** 2).sum()))(rnn, x)
    ref = nnx.jit(nnx.grad(lambda c, x: (python_loop(c, x)[1] ** 2).sum()))(cell, x)
    _close(grads["cell"], ref, 1e-4)


def test_rnn_errors_name_what_was_expected():
    rnn = nnx.RNN(_cell(nnx.GRUCell))
    with pytest.raises(nnx.PlaitError, match=r"seq_lengths has shape \(3,\).*batch shape \(2,\)"):
        rnn(jnp.ones((B, T, IN)), seq_lengths=jnp.ones(3, jnp.int32))
    with pytest.raises(nnx.PlaitError, match="at least a time axis"):
        rnn(jnp.ones(IN))
    with pytest.raises(nnx.PlaitError, match="expects a cell"):
        nnx.RNN(nnx.Linear(IN, H, kernel_init=np_init, rngs=nnx.Rngs(0)))


# =======================================================================================
# State inside the cell: RNG streams are carried, so each step draws anew
# =======================================================================================


class DropoutCell(nnx.RNNCellBase):
    """Counts its steps in the carry and outputs a dropout mask (times 2) of ones."""

    def __init__(self, rngs: nnx.Rngs):
        self.dropout = nnx.Dropout(0.5, rngs=rngs)
        self.steps = nnx.BatchStat(jnp.zeros((), jnp.int32))  # state the cell writes, carried too

    def __call__(self, carry, x):
        self.steps.value = self.steps.value + 1
        return carry + 1, self.dropout(jnp.ones((x.shape[0], 16)))

    def initialize_carry(self, input_shape, rngs=None, carry_init=None):
        return jnp.zeros(input_shape[:-1], jnp.int32)


def test_rnn_with_dropout_in_the_cell_draws_a_new_mask_every_step():
    rngs = nnx.Rngs(0)
    cell = DropoutCell(rngs)
    reference = nnx.clone(cell)  # same stream, same count: a loop over it must see the same keys
    x = jnp.ones((B, T, IN))
    carry, masks = nnx.RNN(cell, return_carry=True)(x)
    assert masks.shape == (B, T, 16)
    np.testing.assert_array_equal(np.asarray(carry), [T, T])
    rows = {np.asarray(masks[0, t]).tobytes() for t in range(T)}
    assert len(rows) == T, "every step must draw its own mask"
    assert int(rngs.default.count.value) == T  # every draw was carried back to the caller's Rngs
    assert int(cell.steps.value) == T
    _, loop_masks = python_loop(reference, np.asarray(x))
    np.testing.assert_array_equal(np.asarray(masks), np.asarray(loop_masks))


def test_a_cell_that_writes_a_param_in_a_step_is_refused():
    class Drifting(nnx.RNNCellBase):
        def __init__(self):
            self.w = nnx.Param(jnp.zeros(()))

        def __call__(self, carry, x):
            self.w.value = self.w.value + 1
            return carry, x

        def initialize_carry(self, input_shape, rngs=None, carry_init=None):
            return jnp.zeros(input_shape[:-1])

    with pytest.raises(nnx.StateError, match="broadcast to every step"):
        nnx.RNN(Drifting())(jnp.ones((B, T, IN)))


@pytest.mark.parametrize("cls", [nnx.SimpleCell, nnx.GRUCell, nnx.LSTMCell, nnx.OptimizedLSTMCell])
def test_cells_keep_their_rngs_for_initialize_carry(cls):
    plain = _cell(cls)
    assert plain.rngs is None  # keep_rngs=False, the reference's default: nothing kept
    zeros = plain.initialize_carry((B, IN), plain.rngs)
    assert not any(np.asarray(leaf).any() for leaf in jax.tree.leaves(zeros))
    kept = _cell(cls, keep_rngs=True, carry_init=nnx.initializers.normal(1.0))
    assert isinstance(kept.rngs, nnx.RngStream)  # forked from `carry`, here falling back to `default`
    first = kept.initialize_carry((B, IN), kept.rngs)
    second = kept.initialize_carry((B, IN))  # no rngs given: the kept stream
    assert np.asarray(jax.tree.leaves(first)[0]).std() > 0
    assert not np.array_equal(np.asarray(jax.tree.leaves(first)[0]), np.asarray(jax.tree.leaves(second)[0]))
    assert int(kept.rngs.count.value) == 2 * len(jax.tree.leaves(first))


def test_rnn_rngs_seed_the_initial_carry():
    cell = _cell(nnx.GRUCell, carry_init=nnx.initializers.normal(1.0))
    x = jnp.asarray(_x())
    rnn = nnx.RNN(cell, return_carry=True)  # rngs=True: a carry stream seeded with 0
    assert isinstance(rnn.rngs, nnx.RngStream) and rnn.rngs.tag == "carry"
    first, second = rnn(x)[0], rnn(x)[0]
    assert not np.array_equal(np.asarray(first), np.asarray(second))  # a new initial carry per call
    again = nnx.RNN(cell, return_carry=True)(x)[0]
    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))  # the same seed, the same carry
    seeded = nnx.RNN(cell, return_carry=True, rngs=nnx.Rngs(carry=7))
    assert not np.array_equal(np.asarray(seeded(x)[0]), np.asarray(first))
    with pytest.raises(nnx.RngError, match="rngs=nnx.Rngs"):
        nnx.RNN(cell, rngs=False)(x)
    with pytest.raises(nnx.LayerError, match="rngs must be True"):
        nnx.RNN(cell, rngs=3)
    plain = nnx.RNN(_cell(nnx.GRUCell))
    assert plain(x).shape == (B, T, H)
    assert int(plain.rngs.count.value) == 0  # a zeros carry draws no key


def test_rnn_broadcast_rngs_gives_every_step_the_same_keys():
    rnn = nnx.RNN(DropoutCell(nnx.Rngs(dropout=0)), broadcast_rngs="dropout")  # a filter on the stream name
    x = jnp.ones((B, T, IN))
    masks = np.asarray(rnn(x))
    assert all(np.array_equal(masks[:, t], masks[:, 0]) for t in range(T))  # one mask for the sequence
    assert 0 < masks.mean() < 2
    assert not np.array_equal(np.asarray(rnn(x)), masks)  # a new mask on the next call
    per_step = np.asarray(nnx.RNN(DropoutCell(nnx.Rngs(0)))(x))
    assert len({per_step[0, t].tobytes() for t in range(T)}) == T


def test_rnn_state_axes_replace_how_the_cell_state_goes_through_the_scan():
    x = jnp.asarray(_x())
    cell = _cell(nnx.LSTMCell)
    carried = nnx.RNN(cell, state_axes={...: nnx.Carry})  # the reference's default: everything carried
    np.testing.assert_allclose(np.asarray(carried(x)), np.asarray(nnx.RNN(cell)(x)), rtol=1e-6)
    assert carried.state_axes == nnx.StateAxes({...: nnx.Carry})


# =======================================================================================
# Bidirectional
# =======================================================================================


def test_bidirectional_concatenates_forward_and_backward():
    fwd_cell, bwd_cell = _cell(nnx.GRUCell), _cell(nnx.LSTMCell)
    bi = nnx.Bidirectional(nnx.RNN(fwd_cell), nnx.RNN(bwd_cell), return_carry=True)
    x = _x()
    (carry_f, carry_b), ys = bi(jnp.asarray(x))
    assert ys.shape == (B, T, 2 * H)
    ref_cf, ref_f = python_loop(fwd_cell, x)
    ref_cb, ref_b = python_loop(bwd_cell, x[:, ::-1])
    _close(ys, np.concatenate([np.asarray(ref_f), np.asarray(ref_b)[:, ::-1]], axis=-1))
    _close((carry_f, carry_b), (ref_cf, ref_cb))


def test_bidirectional_merge_fn_seq_lengths_and_initial_carry():
    fwd_cell, bwd_cell = _cell(nnx.GRUCell), _cell(nnx.GRUCell)
    bi = nnx.Bidirectional(nnx.RNN(fwd_cell), nnx.RNN(bwd_cell), merge_fn=jnp.add)
    x = _x()
    lengths = np.array([T, 3])
    h0 = (jnp.asarray(_x(B, H)), jnp.asarray(_x(B, H)))
    ys = bi(jnp.asarray(x), seq_lengths=jnp.asarray(lengths), initial_carry=h0)
    assert ys.shape == (B, T, H)
    for b, n in enumerate(lengths):
        _, f = python_loop(fwd_cell, x[b : b + 1, :n], carry=h0[0][b : b + 1])
        _, r = python_loop(bwd_cell, x[b : b + 1, :n][:, ::-1], carry=h0[1][b : b + 1])
        _close(ys[b, :n], np.asarray(f[0]) + np.asarray(r[0])[::-1])
        assert not np.asarray(ys[b, n:]).any()


@pytest.mark.parametrize("cls", [nnx.SimpleCell, nnx.GRUCell, nnx.LSTMCell, nnx.OptimizedLSTMCell])
def test_cell_metadata_goes_to_input_recurrent_kernels_and_biases(cls):
    cell = cls(IN, H, kernel_metadata={"role": "input"}, recurrent_kernel_metadata={"role": "recurrent"},
               bias_metadata={"role": "bias"}, rngs=nnx.Rngs(0))
    roles = set()
    for path, v in nnx.state(cell, nnx.Param).flat_state():
        role = v.get_metadata()["role"]
        if path[-1] == "bias":
            assert role == "bias"
        else:  # input kernels read in_features rows, recurrent ones hidden_features
            assert role == ("input" if v.value.shape[0] == IN else "recurrent"), (path, role)
        roles.add(role)
    assert roles == {"input", "recurrent", "bias"}


def test_cell_promote_dtype_reaches_its_dense_layers_and_bidirectional_keeps_a_carry_stream():
    def promote(args, /, *, dtype=None, inexact=True):
        return tuple(None if a is None else jnp.asarray(a, jnp.float16) for a in args)

    cell = nnx.GRUCell(IN, H, promote_dtype=promote, rngs=nnx.Rngs(0))
    assert cell.dense_i.promote_dtype is promote and cell.dense_h.promote_dtype is promote
    assert cell.dense_i(jnp.ones((B, IN))).dtype == jnp.float16

    def rnn():
        return nnx.RNN(_cell(nnx.GRUCell, carry_init=nnx.initializers.normal(1.0)), rngs=False)

    bi = nnx.Bidirectional(rnn(), rnn(), return_carry=True, rngs=nnx.Rngs(carry=3))
    assert isinstance(bi.rngs, nnx.RngStream)
    (forward, backward), _ = bi(jnp.asarray(_x()))  # the RNNs hold no stream: the Bidirectional's is used
    assert int(bi.rngs.count.value) == 2 and forward.shape == (B, H)
