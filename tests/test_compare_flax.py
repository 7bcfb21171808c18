"""Optional comparison with Flax NNX: every plait layer that has a Flax NNX namesake.

Each test builds the plait layer and the Flax layer with the same constructor arguments,
checks that their variables have the same paths, types and shapes (a layout mismatch
fails loudly, listing the differing paths), copies plait's values into the Flax layer,
runs both on the same input and compares the outputs.

Skipped when Flax is not installed. Weights come from NumPy (no JAX random compile per
shape) and every shape is tiny, so the file stays fast.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

flax = pytest.importorskip("flax")
from flax import nnx as fnnx  # noqa: E402

import plait as nnx  # noqa: E402

RTOL = ATOL = 1e-5
RNG = np.random.RandomState(0)


# =======================================================================================
# Helpers
# =======================================================================================
def _randn(*shape) -> np.ndarray:
    return np.asarray(RNG.randn(*shape), np.float32)


def _value(v):
    if hasattr(v, "get_value"):
        return v.get_value()
    return v.value if hasattr(v, "value") else v


def _plait_flat(layer) -> dict:
    """``{path: Variable}`` for every variable of a plait layer except RNG state."""
    state = nnx.state(layer, nnx.Not(nnx.RngState))
    return {tuple(str(k) for k in path): v for path, v in state.flat_state()}


def _flax_flat(layer) -> tuple:
    state = fnnx.state(layer, fnnx.Not(fnnx.RngState))
    flat = {tuple(str(k) for k in path): v for path, v in fnnx.to_flat_state(state)}
    return state, flat


def _layout(flat: dict) -> dict:
    return {p: (type(v).__name__, tuple(np.shape(_value(v)))) for p, v in flat.items()}


def assert_same_layout(p_layer, f_layer) -> None:
    """Same variable paths; at each path the same variable type name and shape."""
    p_flat, (_, f_flat) = _plait_flat(p_layer), _flax_flat(f_layer)
    only_p, only_f = sorted(set(p_flat) - set(f_flat)), sorted(set(f_flat) - set(p_flat))
    assert set(p_flat) == set(f_flat), (
        f"variable paths differ: only in plait {only_p} (of {sorted(p_flat)}), "
        f"only in Flax {only_f} (of {sorted(f_flat)})"
    )
    p_lay, f_lay = _layout(p_flat), _layout(f_flat)
    diff = {p: (p_lay[p], f_lay[p]) for p in p_lay if p_lay[p] != f_lay[p]}
    assert not diff, f"(type, shape) differ at {diff}  (plait, Flax)"


def randomize(p_layer, scale: float = 0.5) -> None:
    """Give every (non-RNG) variable of a plait layer random values from NumPy.

    Random biases, LoRA B matrices and batch statistics exercise more than their zero
    initial values would; variances (paths ending in ``var``) stay positive. This also
    makes a layer built under ``eval_shape`` concrete.
    """
    state = nnx.state(p_layer, nnx.Not(nnx.RngState))
    for path, var in state.flat_state():
        shape, dtype = np.shape(_value(var)), _value(var).dtype
        if path[-1] == "var":
            new = RNG.uniform(0.5, 1.5, shape)
        elif jnp.issubdtype(dtype, jnp.integer):
            new = np.zeros(shape)
        else:
            new = scale * RNG.randn(*shape)
        var.value = jnp.asarray(new, dtype)
    nnx.update(p_layer, state)


def copy_to_flax(p_layer, f_layer) -> None:
    """Check the layouts match, then write every plait variable's value into the Flax layer."""
    assert_same_layout(p_layer, f_layer)
    p_flat = _plait_flat(p_layer)
    f_state, _ = _flax_flat(f_layer)
    for path, var in fnnx.to_flat_state(f_state):
        var.set_value(jnp.asarray(_value(p_flat[tuple(str(k) for k in path)])))
    fnnx.update(f_layer, f_state)


def pair(p_cls, f_cls, *args, concrete=False, rngs=True, **kwargs):
    """The plait and Flax layers built from the same arguments, Flax holding plait's values.

    By default both are built under ``eval_shape`` (no random-init compile per shape) and
    plait's variables are then filled by :func:`randomize`; ``concrete=True`` builds them
    for real and keeps plait's initial values.
    """
    def build_p():
        return p_cls(*args, **kwargs, **({"rngs": nnx.Rngs(0)} if rngs else {}))

    def build_f():
        return f_cls(*args, **kwargs, **({"rngs": fnnx.Rngs(0)} if rngs else {}))

    if concrete:
        p, f = build_p(), build_f()
    else:
        p, f = nnx.eval_shape(build_p), fnnx.eval_shape(build_f)
        randomize(p)
    copy_to_flax(p, f)
    return p, f


def both(p_fn, f_fn, *args, **kwargs):
    """``p_fn(*args, **kwargs)`` and ``f_fn(*args, **kwargs)``, each as one jitted call.

    Only for calls that change no state. One compile per call is much cheaper on CPU than
    dispatching (and compiling) every small op eagerly.
    """
    return (jax.jit(lambda *a: p_fn(*a, **kwargs))(*args), jax.jit(lambda *a: f_fn(*a, **kwargs))(*args))


def both_graph(p_layer, f_layer, *args, **kwargs):
    """``layer(*args, **kwargs)`` for both, each through its own library's ``jit`` (which
    also writes back any state the call changes)."""
    return (nnx.jit(lambda m, *a: m(*a, **kwargs))(p_layer, *args),
            fnnx.jit(lambda m, *a: m(*a, **kwargs))(f_layer, *args))


def assert_close(a, b, rtol=RTOL, atol=ATOL) -> None:
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)
    assert jax.tree.structure(a) == jax.tree.structure(b)


def assert_same_values(p_layer, f_layer) -> None:
    """After running both layers, their (non-RNG) variables agree too."""
    p_flat, (_, f_flat) = _plait_flat(p_layer), _flax_flat(f_layer)
    assert set(p_flat) == set(f_flat)
    for path in p_flat:
        np.testing.assert_allclose(np.asarray(_value(p_flat[path])), np.asarray(_value(f_flat[path])),
                                   rtol=RTOL, atol=ATOL, err_msg=f"at {path}")


# =======================================================================================
# Linear family
# =======================================================================================
@pytest.mark.parametrize("use_bias", [True, False])
def test_linear(use_bias):
    p, f = pair(nnx.Linear, fnnx.Linear, 3, 4, use_bias=use_bias)
    x = _randn(2, 3)
    assert_close(*both(p, f, x))


@pytest.mark.parametrize(
    "args,kwargs,xshape",
    [
        ((3, (2, 4)), {}, (2, 3)),
        (((2, 3), 4), {"axis": (-2, -1)}, (2, 2, 3)),
        ((2, 5), {"axis": 1}, (3, 2, 4)),
    ],
    ids=["out_tuple", "in_tuple", "middle_axis"],
)
def test_linear_general(args, kwargs, xshape):
    p, f = pair(nnx.LinearGeneral, fnnx.LinearGeneral, *args, **kwargs)
    x = _randn(*xshape)
    assert_close(*both(p, f, x))


@pytest.mark.parametrize(
    "eq,kshape,bshape,xshape",
    [
        ("bd,df->bf", (3, 4), (4,), (2, 3)),
        ("bti,hid->bthd", (2, 3, 4), (2, 4), (2, 5, 3)),
        ("bd,df->bf", (3, 4), None, (2, 3)),
    ],
)
def test_einsum(eq, kshape, bshape, xshape):
    p, f = pair(nnx.Einsum, fnnx.Einsum, eq, kshape, bshape)
    x = _randn(*xshape)
    assert_close(*both(p, f, x))


def test_lora_linear():
    p, f = pair(nnx.LoRALinear, fnnx.LoRALinear, 3, 4, lora_rank=2)
    x = _randn(2, 3)
    assert_close(*both(p, f, x))


# =======================================================================================
# Embed, PReLU, Dropout
# =======================================================================================
def test_embed_call_and_attend():
    p, f = pair(nnx.Embed, fnnx.Embed, 10, 4)
    ids = np.array([[0, 3, 9], [1, 1, 5]], np.int32)
    assert_close(*both(p, f, ids))
    q = _randn(2, 4)
    assert_close(*both(p.attend, f.attend, q))


def test_prelu():
    p, f = pair(nnx.PReLU, fnnx.PReLU, 0.1, concrete=True, rngs=False)
    x = _randn(2, 5)
    assert_close(*both(p, f, x))
    randomize(p)
    copy_to_flax(p, f)
    assert_close(*both(p, f, x))


def test_dropout_deterministic():
    p = nnx.Dropout(0.5, deterministic=True, rngs=nnx.Rngs(0))
    f = fnnx.Dropout(0.5, deterministic=True, rngs=fnnx.Rngs(0))
    assert_same_layout(p, f)
    x = _randn(3, 4)
    assert_close(*both(p, f, x))
    np.testing.assert_array_equal(np.asarray(p(x)), x)
    # rate 0 (and the per-call flag) is the identity in both as well
    p0 = nnx.Dropout(0.0, rngs=nnx.Rngs(0))
    f0 = fnnx.Dropout(0.0, rngs=fnnx.Rngs(0))
    assert_close(*both(p0, f0, x))
    pt = nnx.Dropout(0.5, rngs=nnx.Rngs(0))
    ft = fnnx.Dropout(0.5, rngs=fnnx.Rngs(0))
    assert_close(*both(pt, ft, x, deterministic=True))


# =======================================================================================
# Convolutions
# =======================================================================================
CONV_CASES = [
    # (in, out, kernel_size, kwargs, input shape)
    (3, 4, 3, {"padding": "SAME"}, (2, 7, 3)),
    (3, 4, 3, {"padding": "VALID"}, (2, 7, 3)),
    (3, 4, 3, {"padding": "CIRCULAR"}, (2, 7, 3)),
    (3, 4, 4, {"padding": "CIRCULAR"}, (2, 7, 3)),
    (3, 4, 3, {"padding": "CAUSAL"}, (2, 7, 3)),
    (3, 4, 3, {"padding": "CAUSAL", "kernel_dilation": 2}, (2, 7, 3)),
    (3, 4, 3, {"padding": 1}, (2, 7, 3)),
    (3, 4, 3, {"padding": [(2, 0)]}, (2, 7, 3)),
    (3, 4, 3, {"strides": 2, "padding": "SAME"}, (2, 8, 3)),
    (3, 4, 3, {"strides": 2, "padding": "VALID"}, (2, 8, 3)),
    (3, 4, 3, {"kernel_dilation": 2, "padding": "SAME"}, (2, 9, 3)),
    (3, 4, 2, {"input_dilation": 2, "padding": [(1, 1)]}, (2, 5, 3)),  # Flax: no string padding here
    (6, 4, 3, {"feature_group_count": 2}, (2, 7, 6)),
    (6, 6, 3, {"feature_group_count": 6, "use_bias": False}, (2, 7, 6)),
    (2, 3, (3, 3), {"padding": "SAME"}, (2, 5, 6, 2)),
    (2, 3, (3, 2), {"strides": (2, 1), "padding": "VALID"}, (2, 6, 5, 2)),
    (2, 3, (3, 3), {"padding": "CIRCULAR", "strides": (1, 2)}, (2, 5, 6, 2)),
    (2, 3, (3, 3), {"kernel_dilation": (2, 1), "padding": "SAME"}, (1, 6, 6, 2)),
    (3, 4, 3, {"padding": "SAME"}, (7, 3)),  # no batch axis
]


@pytest.mark.parametrize("cin,cout,ks,kwargs,xshape", CONV_CASES, ids=[str(c[3]) + str(c[4]) for c in CONV_CASES])
def test_conv(cin, cout, ks, kwargs, xshape):
    p, f = pair(nnx.Conv, fnnx.Conv, cin, cout, ks, **kwargs)
    x = _randn(*xshape)
    assert_close(*both(p, f, x))


CONV_T_CASES = [
    (3, 4, 3, {"padding": "SAME"}, (2, 5, 3)),
    (3, 4, 3, {"padding": "VALID"}, (2, 5, 3)),
    (3, 4, 3, {"strides": 2, "padding": "SAME"}, (2, 5, 3)),
    (3, 4, 3, {"strides": 2, "padding": "VALID"}, (2, 5, 3)),
    (3, 4, 4, {"strides": 2, "padding": "SAME"}, (2, 5, 3)),
    (3, 4, 3, {"kernel_dilation": 2, "padding": "SAME"}, (2, 5, 3)),
    (3, 4, 3, {"strides": 2, "padding": "CIRCULAR"}, (2, 5, 3)),
    (3, 4, 5, {"strides": 3, "padding": "CIRCULAR"}, (2, 4, 3)),
    (2, 3, (3, 3), {"strides": (2, 1), "padding": "SAME"}, (2, 4, 5, 2)),
    (2, 3, (2, 3), {"strides": 2, "padding": "VALID", "use_bias": False}, (2, 4, 5, 2)),
    (3, 4, 3, {"strides": 2, "padding": "SAME", "transpose_kernel": True}, (2, 5, 3)),
    (3, 4, 5, {"strides": 3, "padding": "CIRCULAR", "transpose_kernel": True}, (2, 4, 3)),
]


@pytest.mark.parametrize("cin,cout,ks,kwargs,xshape", CONV_T_CASES, ids=[str(c[3]) + str(c[4]) for c in CONV_T_CASES])
def test_conv_transpose(cin, cout, ks, kwargs, xshape):
    if kwargs.get("transpose_kernel") and kwargs.get("padding") == "CIRCULAR":
        pytest.skip("plait's ConvTranspose with padding='CIRCULAR' and transpose_kernel=True intentionally "
                    "differs from Flax's")
    p, f = pair(nnx.ConvTranspose, fnnx.ConvTranspose, cin, cout, ks, **kwargs)
    x = _randn(*xshape)
    assert_close(*both(p, f, x))


# =======================================================================================
# Normalization
# =======================================================================================
@pytest.mark.parametrize(
    "cls_name,args,kwargs,xshape",
    [
        ("LayerNorm", (4,), {}, (2, 3, 4)),
        ("LayerNorm", (4,), {"use_bias": False, "epsilon": 1e-3}, (2, 4)),
        ("RMSNorm", (4,), {}, (2, 3, 4)),
        ("RMSNorm", (4,), {"use_scale": False}, (2, 4)),
        ("GroupNorm", (6,), {"num_groups": 3}, (2, 5, 6)),
        ("GroupNorm", (6,), {"num_groups": None, "group_size": 2, "use_bias": False}, (2, 4, 3, 6)),
    ],
    ids=["layernorm", "layernorm_nobias", "rmsnorm", "rmsnorm_noscale", "groupnorm",
         "groupnorm_group_size"],
)
def test_feature_norms(cls_name, args, kwargs, xshape):
    p, f = pair(getattr(nnx, cls_name), getattr(fnnx, cls_name), *args, **kwargs)
    x = _randn(*xshape)
    assert_close(*both(p, f, x))


@pytest.mark.parametrize("kwargs,xshape", [({}, (8, 4)), ({"axis": 1, "momentum": 0.8}, (3, 4, 2))],
                         ids=["last_axis", "axis1"])
def test_batchnorm_train_then_eval(kwargs, xshape):
    nf = xshape[kwargs.get("axis", -1)]
    p, f = pair(nnx.BatchNorm, fnnx.BatchNorm, nf, **kwargs)
    x = _randn(*xshape) * 2.0 + 0.5
    assert_close(p(x), f(x))  # train mode (eager: it updates the running stats)
    assert_same_values(p, f)  # includes batch_stats mean/var after one step
    x2 = _randn(*xshape)
    assert_close(p(x2), f(x2))
    assert_same_values(p, f)
    assert_close(*both(p, f, x2, use_running_average=True))  # eval mode
    # eval mode set in the constructor
    pe, fe = pair(nnx.BatchNorm, fnnx.BatchNorm, nf, use_running_average=True, **kwargs)
    assert_close(*both(pe, fe, x2))
    assert_same_values(pe, fe)


HALF_NORMS = [
    ("LayerNorm", (4,), {}, (2, 3, 4)),
    ("RMSNorm", (4,), {}, (2, 3, 4)),
    ("GroupNorm", (6,), {"num_groups": 3}, (2, 5, 6)),
    ("InstanceNorm", (4,), {}, (2, 3, 4)),
    ("BatchNorm", (4,), {}, (6, 4)),
    ("BatchNorm", (4,), {"use_running_average": True}, (6, 4)),
]


@pytest.mark.parametrize("half", [jnp.float16, jnp.bfloat16], ids=["float16", "bfloat16"])
@pytest.mark.parametrize("dtypes", [{}, {"dtype": "half"}, {"param_dtype": "half"}, {"dtype": "half", "param_dtype": "half"}],
                         ids=["default", "dtype", "param_dtype", "both"])
@pytest.mark.parametrize("cls_name,args,kwargs,xshape", HALF_NORMS,
                         ids=["layernorm", "rmsnorm", "groupnorm", "instancenorm", "batchnorm", "batchnorm_eval"])
def test_norms_in_half_precision_bit_for_bit(cls_name, args, kwargs, xshape, dtypes, half):
    """Statistics in float32, then the reference's casts: the same bits, the same dtype."""
    dtypes = {k: half for k in dtypes}
    p, f = pair(getattr(nnx, cls_name), getattr(fnnx, cls_name), *args, **kwargs, **dtypes)
    x = jnp.asarray(_randn(*xshape) * 3 + 1, half)
    a, b = both_graph(p, f, x)  # BatchNorm in training writes its statistics
    assert a.dtype == b.dtype
    np.testing.assert_array_equal(np.asarray(a, np.float64), np.asarray(b, np.float64))


# =======================================================================================
# Attention
# =======================================================================================
B, T, D, HEADS = 2, 5, 8, 2


@pytest.fixture(scope="module")
def mha_pair():
    return pair(nnx.MultiHeadAttention, fnnx.MultiHeadAttention, HEADS, D, decode=False)


def test_mha_causal(mha_pair):
    p, f = mha_pair
    x = _randn(B, T, D)
    mask = nnx.make_causal_mask(jnp.ones((B, T)))
    np.testing.assert_array_equal(np.asarray(mask), np.asarray(fnnx.make_causal_mask(jnp.ones((B, T)))))
    assert_close(*both(p, f, x, mask=mask))
    # no mask, and cross-attention with a separate key/value input
    kv = _randn(B, 3, D)
    assert_close(*both(p, f, x))
    assert_close(*both(p, f, x, kv))


def test_mha_qkv_out_features():
    p, f = pair(nnx.MultiHeadAttention, fnnx.MultiHeadAttention, HEADS, 6, 8, 5, decode=False)
    x = _randn(B, 3, 6)
    assert_close(*both(p, f, x))


def test_mha_decode_one_token_at_a_time():
    p, f = pair(nnx.MultiHeadAttention, fnnx.MultiHeadAttention, HEADS, D, decode=True)
    x = _randn(B, T, D)
    full = jax.jit(lambda x: p(x, mask=nnx.make_causal_mask(jnp.ones((B, T))), decode=False))(x)
    p.init_cache((B, T, D))
    f.init_cache((B, T, D))
    assert_same_layout(p, f)  # the cache variables too
    step_p = nnx.jit(lambda m, x: m(x))  # one compile for all steps; the cache is written back
    step_f = fnnx.jit(lambda m, x: m(x))
    for t in range(T):
        yp, yf = step_p(p, x[:, t : t + 1]), step_f(f, x[:, t : t + 1])
        assert_close(yp, yf)
        assert_close(yp, full[:, t : t + 1])
    assert_same_values(p, f)  # cached keys/values and the index


# =======================================================================================
# Recurrent
# =======================================================================================
IN, HID = 3, 4
CELLS = ["LSTMCell", "GRUCell", "SimpleCell", "OptimizedLSTMCell"]


@pytest.mark.parametrize("name", CELLS)
def test_cell_step(name):
    p, f = pair(getattr(nnx, name), getattr(fnnx, name), IN, HID)
    x = _randn(B, IN)
    carry_p = p.initialize_carry((B, IN))
    carry_f = f.initialize_carry((B, IN), rngs=fnnx.Rngs(0))  # Flax insists on rngs, even for zeros
    assert_close(carry_p, carry_f)
    carry = jax.tree.map(lambda c: jnp.asarray(_randn(*c.shape)), carry_p)  # a non-zero carry
    assert_close(*both(p, f, carry, x))


def test_rnn_over_lstm():
    # built for real: each library's jit takes the whole module, RNG state included
    p = nnx.RNN(nnx.LSTMCell(IN, HID, rngs=nnx.Rngs(0)))
    f = fnnx.RNN(fnnx.LSTMCell(IN, HID, rngs=fnnx.Rngs(0)))
    randomize(p)
    copy_to_flax(p, f)
    x = _randn(B, T, IN)
    # an explicit initial carry: Flax's RNN cannot make its default one inside jit
    carry = tuple(jnp.asarray(_randn(B, HID)) for _ in range(2))
    assert_close(*both_graph(p, f, x, initial_carry=carry))
    assert_close(*both_graph(p, f, x, initial_carry=carry, return_carry=True))
    # Padded sequences: the final carries agree, and so do the outputs at the real steps.
    # Past a sequence's end plait's outputs are zero (documented in plait.nn.RNN); Flax's
    # are whatever the cell computed there, so those steps are not compared.
    lengths = np.array([T, 3], np.int32)
    (cp, yp), (cf, yf) = both_graph(p, f, x, initial_carry=carry, seq_lengths=lengths,
                                    return_carry=True)
    assert_close(cp, cf)
    valid = (np.arange(T)[None, :] < lengths[:, None])[..., None]
    assert_close(np.where(valid, yp, 0.0), np.where(valid, yf, 0.0))
    np.testing.assert_array_equal(np.asarray(yp)[1, 3:], 0.0)
    assert_close(*both_graph(p, f, x, initial_carry=carry, reverse=True, keep_order=True))


# =======================================================================================
# Pooling
# =======================================================================================
POOL_CASES = [
    ((2,), None, "VALID", (2, 6, 3)),
    ((3,), (2,), "SAME", (2, 7, 3)),
    ((2, 2), (2, 2), "VALID", (2, 4, 6, 3)),
    ((3, 3), (1, 1), "SAME", (1, 5, 5, 2)),
    ((3, 2), (2, 1), ((1, 1), (0, 1)), (1, 5, 5, 2)),
]


@pytest.mark.parametrize("fn", ["avg_pool", "max_pool"])
@pytest.mark.parametrize("window,strides,padding,xshape", POOL_CASES, ids=[str(c) for c in range(len(POOL_CASES))])
def test_pool(fn, window, strides, padding, xshape):
    x = _randn(*xshape)
    assert_close(*both(getattr(nnx, fn), getattr(fnnx, fn), x, window_shape=window, strides=strides, padding=padding))


@pytest.mark.parametrize("padding", ["SAME", ((1, 1), (0, 1))])
def test_avg_pool_count_include_pad_false(padding):
    x = _randn(1, 5, 5, 2)
    assert_close(*both(nnx.avg_pool, fnnx.avg_pool, x, window_shape=(3, 2), strides=(1, 1), padding=padding,
                       count_include_pad=False))


# =======================================================================================
# Filters: the same filter selects the same paths
# ================================================================================

def _filter_model(lib):
    class M(lib.Module):
        def __init__(self):
            rngs = lib.Rngs(0)
            self.linear = lib.Linear(2, 3, rngs=rngs)
            self.norm = lib.BatchNorm(3, rngs=rngs)
            self.rngs = lib.Rngs(0, dropout=1)

    return M()


FILTER_CASES = [
    ("Param", lambda lib: lib.Param),
    ("OfType", lambda lib: lib.OfType(lib.BatchStat)),
    ("tag", lambda lib: "dropout"),
    ("WithTag", lambda lib: lib.WithTag("default")),
    ("Everything", lambda lib: lib.Everything()),
    ("Nothing", lambda lib: lib.Nothing()),
    ("PathContains", lambda lib: lib.PathContains("norm")),
    ("PathContains inexact", lambda lib: lib.PathContains("ker", exact=False)),
    ("Not", lambda lib: lib.Not(lib.Param)),
    ("All", lambda lib: lib.All(lib.RngState, lib.Not(lib.RngKey))),
    ("Any", lambda lib: lib.Any(lib.BatchStat, "dropout")),
    ("filterlib", lambda lib: lib.filterlib.OfType(lib.RngKey)),
]


@pytest.mark.parametrize("make", [c[1] for c in FILTER_CASES], ids=[c[0] for c in FILTER_CASES])
def test_filter_selects_same_paths(make):
    def paths(lib):
        state = lib.state(_filter_model(lib), make(lib))
        return sorted(tuple(map(str, p)) for p, _ in state.flat_state())

    assert paths(nnx) == paths(fnnx)


# =======================================================================================
# Rngs: draws are fold_in(key, count) in both, so samplers and splits agree bitwise
# =======================================================================================
@pytest.mark.parametrize("name, args", [("normal", ((2, 3),)), ("uniform", ((4,),)), ("bernoulli", (0.3, (5,))),
                                        ("randint", ((3,), 0, 10))])
def test_rngs_samplers_same_values(name, args):
    p, f = nnx.Rngs(0, dropout=3), fnnx.Rngs(0, dropout=3)
    for _ in range(2):  # the second draw uses the advanced count
        np.testing.assert_array_equal(getattr(p, name)(*args), getattr(f, name)(*args))
        np.testing.assert_array_equal(getattr(p.dropout, name)(*args), getattr(f.dropout, name)(*args))


def test_rngs_split_fork_and_initializers_same_keys():
    def kd(k):
        return np.asarray(jax.random.key_data(k))

    p, f = nnx.Rngs(params=1, dropout=2), fnnx.Rngs(params=1, dropout=2)
    ps, fs = p.split({"params": 3, ...: (2, 2)}), f.split({"params": 3, ...: (2, 2)})
    for name in ("params", "dropout"):
        np.testing.assert_array_equal(kd(ps[name].key.value), kd(fs[name].key.get_value()))
    np.testing.assert_array_equal(kd(p.fork().params.key.value), kd(f.fork().params.key.get_value()))
    np.testing.assert_array_equal(p.params.lecun_normal()((3, 2)), f.params.lecun_normal()((3, 2)))


def test_with_rngs_and_split_rngs_copies_same_keys():
    def kd(k):
        return np.asarray(jax.random.key_data(k))

    p = nnx.with_rngs(nnx.Rngs(params=0, dropout=1), split={"params": 4}, fork=nnx.Not("params"))
    f = fnnx.with_rngs(fnnx.Rngs(params=0, dropout=1), split={"params": 4}, fork=fnnx.Not("params"), graph=False)
    for name in ("params", "dropout"):
        np.testing.assert_array_equal(kd(p[name].key.value), kd(f[name].key.get_value()))
    p = nnx.split_rngs(nnx.Rngs(params=0, dropout=1), splits=3, only="params", graph_updates=False)
    f = fnnx.split_rngs(fnnx.Rngs(params=0, dropout=1), splits=3, only="params", graph_updates=False)
    for name in ("params", "dropout"):
        np.testing.assert_array_equal(kd(p[name].key.value), kd(f[name].key.get_value()))


# =======================================================================================
# Constructor keywords
# =======================================================================================
# plait's own keywords, which the reference does not have (none of them changes what a
# reference keyword means).
PLAIT_ONLY = {
    "Embed": {"check_ids"},  # check traced ids at run time
    "LoRALinear": {"lora_base_module"},
    "PReLU": {"rngs"},  # accepted for a uniform constructor; PReLU draws nothing
}


def _parameter_names(obj) -> set:
    import inspect

    target = obj.__init__ if inspect.isclass(obj) else obj
    kinds = (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)  # Sequential(*layers) ~ (*fns)
    return {n for n, p in inspect.signature(target).parameters.items() if p.kind not in kinds and n != "self"}


def _shared_layers() -> list:
    import inspect

    names = []
    for name in nnx.nn.__all__:
        ours, theirs = getattr(nnx, name), getattr(fnnx, name, None)
        if theirs is None or (inspect.isclass(ours) and not issubclass(ours, nnx.Module)):
            continue  # not in the reference, or not a layer (LoRAParam is a Variable type)
        names.append(name)
    return names


@pytest.mark.parametrize("name", _shared_layers())
def test_every_reference_keyword_is_accepted(name):
    """Each keyword of the reference's constructor (or function) exists in plait's, so Flax
    NNX code runs unchanged; tests beside each layer check that it is implemented."""
    ours, theirs = _parameter_names(getattr(nnx, name)), _parameter_names(getattr(fnnx, name))
    assert not theirs - ours, f"{name}: plait lacks the reference's {sorted(theirs - ours)}"
    assert ours - theirs == PLAIT_ONLY.get(name, set()), f"{name}: plait-only keywords {sorted(ours - theirs)}"


def test_the_comparison_covers_the_layers():
    shared = set(_shared_layers())
    assert {"Linear", "Conv", "Embed", "BatchNorm", "MultiHeadAttention", "LSTMCell", "RNN", "dot_product_attention"} <= shared
