"""Metrics: values against NumPy, inside ``nnx.jit`` (state written back), reset, masks,
MultiMetric, errors, and the same numbers as Flax NNX's metrics."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import plait as nnx

RS = np.random.RandomState(0)
BATCHES = [RS.randn(5).astype(np.float32) for _ in range(3)]
LOGITS = [RS.randn(6, 4).astype(np.float32) for _ in range(3)]
LABELS = [RS.randint(0, 4, size=6).astype(np.int32) for _ in range(3)]


def _close(a, b):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-6)


def test_average_matches_numpy_and_resets():
    avg = nnx.metrics.Average()
    assert np.isnan(float(avg.compute()))
    for b in BATCHES:
        avg.update(values=jnp.asarray(b))
    _close(avg.compute(), np.concatenate(BATCHES).mean())
    avg.update(values=2)  # a Python number counts as one value
    _close(avg.compute(), (np.concatenate(BATCHES).sum() + 2) / 16)
    avg.reset()
    assert np.isnan(float(avg.compute())) and int(avg.count.value) == 0
    assert avg.total.value.dtype == jnp.float32 and avg.count.value.dtype == jnp.int32


def test_average_with_a_mask_counts_only_unmasked_values():
    avg = nnx.metrics.Average("loss")
    mask = np.array([1, 0, 1, 1, 0], bool)
    avg.update(loss=jnp.asarray(BATCHES[0]), mask=jnp.asarray(mask))
    _close(avg.compute(), BATCHES[0][mask].mean())
    assert int(avg.count.value) == 3


def test_accuracy_multiclass_and_binary_match_numpy():
    acc = nnx.metrics.Accuracy()
    for lg, lb in zip(LOGITS, LABELS):
        acc.update(logits=jnp.asarray(lg), labels=jnp.asarray(lb))
    expected = np.mean(np.concatenate([lg.argmax(-1) == lb for lg, lb in zip(LOGITS, LABELS)]))
    _close(acc.compute(), expected)

    binary = nnx.metrics.Accuracy(threshold=0.0)
    scores, targets = BATCHES[0], (BATCHES[1] > 0).astype(np.int32)
    binary.update(logits=jnp.asarray(scores), labels=jnp.asarray(targets))
    _close(binary.compute(), np.mean((scores >= 0.0) == (targets > 0)))


def test_welford_matches_numpy_mean_std_and_sem():
    wf = nnx.metrics.Welford()
    for b in BATCHES:
        wf.update(values=jnp.asarray(b))
    wf.update(values=1.5)
    data = np.concatenate(BATCHES + [np.array([1.5], np.float32)])
    stats = wf.compute()
    _close(stats.mean, data.mean())
    _close(stats.standard_deviation, data.std())
    _close(stats.standard_error_of_mean, data.std() / np.sqrt(data.size))
    wf.reset()
    stats = wf.compute()
    assert float(stats.mean) == 0.0 and np.isnan(float(stats.standard_deviation))
    assert wf.count.value.dtype == jnp.int32  # reset keeps the dtype: a jitted step does not retrace


def test_multimetric_in_a_jitted_eval_step_writes_state_back():
    metrics = nnx.MultiMetric(loss=nnx.metrics.Average("loss"), accuracy=nnx.metrics.Accuracy())
    total_var = metrics.loss.total
    traces = []

    @nnx.jit
    def eval_step(metrics, logits, labels):
        traces.append(1)
        loss = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), labels[:, None], axis=-1))
        metrics.update(loss=loss, logits=logits, labels=labels)

    losses = []
    for lg, lb in zip(LOGITS, LABELS):
        eval_step(metrics, jnp.asarray(lg), jnp.asarray(lb))
        logp = lg - np.log(np.exp(lg).sum(-1, keepdims=True))
        losses.append(-logp[np.arange(6), lb].mean())
    result = metrics.compute()
    assert list(result) == ["loss", "accuracy"]
    _close(result["loss"], np.mean(losses))
    _close(result["accuracy"], np.mean(np.concatenate([lg.argmax(-1) == lb for lg, lb in zip(LOGITS, LABELS)])))
    assert metrics.loss.total is total_var and int(metrics.accuracy.count.value) == 18
    assert len(traces) == 1

    nnx.jit(lambda m: m.reset())(metrics)  # reset inside a transform is written back too
    assert all(np.isnan(float(v)) for v in metrics.compute().values())
    eval_step(metrics, jnp.asarray(LOGITS[0]), jnp.asarray(LABELS[0]))
    assert len(traces) == 1  # same dtypes after reset: no retrace
    assert int(metrics.accuracy.count.value) == 6


def test_multimetric_masks_per_metric():
    metrics = nnx.MultiMetric(a=nnx.metrics.Average(), b=nnx.metrics.Average())
    values = jnp.array([1.0, 2.0, 3.0])
    metrics.update(values=values, mask={"a": jnp.array([1, 0, 0])})
    assert float(metrics.a.compute()) == 1.0 and float(metrics.b.compute()) == 2.0


def test_metric_state_is_metric_state_variables():
    metrics = nnx.MultiMetric(loss=nnx.metrics.Average(), wf=nnx.metrics.Welford())
    state = nnx.state(metrics, nnx.metrics.MetricState)
    assert sorted(p for p, _ in state.flat_state()) == [
        ("loss", "count"), ("loss", "total"), ("wf", "count"), ("wf", "m2"), ("wf", "mean")
    ]
    graphdef, st = metrics.split()
    assert isinstance(graphdef, nnx.GraphDef) and len(st.flat_state()) == 5


def test_errors_say_what_to_pass():
    with pytest.raises(nnx.MetricError, match=r"needs the keyword argument 'loss' \(given: values\)"):
        nnx.metrics.Average("loss").update(values=jnp.ones(2))
    with pytest.raises(TypeError):  # a TypeError too, as in the reference
        nnx.metrics.Welford().update(loss=1.0)
    with pytest.raises(ValueError, match="a mask needs an array"):
        nnx.metrics.Average().update(values=1.0, mask=jnp.ones(1))
    with pytest.raises(nnx.MetricError, match=r"one more axis than labels.*\(6, 4\).*\(6, 1\)"):
        nnx.metrics.Accuracy().update(logits=jnp.asarray(LOGITS[0]), labels=jnp.zeros((6, 1), jnp.int32))
    with pytest.raises(nnx.MetricError, match="labels must be integers"):
        nnx.metrics.Accuracy().update(logits=jnp.asarray(LOGITS[0]), labels=jnp.zeros(6))
    with pytest.raises(nnx.MetricError, match="must be a float"):
        nnx.metrics.Accuracy(threshold=1)
    with pytest.raises(nnx.MetricError, match="'update' cannot name a metric"):
        nnx.MultiMetric(update=nnx.metrics.Average())
    with pytest.raises(NotImplementedError):
        nnx.Metric()


def test_same_numbers_as_flax_nnx():
    flax_nnx = pytest.importorskip("flax.nnx")
    ours = nnx.MultiMetric(acc=nnx.metrics.Accuracy(), loss=nnx.metrics.Average(), wf=nnx.metrics.Welford())
    theirs = flax_nnx.MultiMetric(
        acc=flax_nnx.metrics.Accuracy(), loss=flax_nnx.metrics.Average(), wf=flax_nnx.metrics.Welford()
    )
    for b, lg, lb in zip(BATCHES, LOGITS, LABELS):
        kwargs = dict(values=jnp.asarray(b), logits=jnp.asarray(lg), labels=jnp.asarray(lb))
        ours.update(**kwargs)
        theirs.update(**kwargs)
    mine, ref = ours.compute(), theirs.compute()
    _close(mine["acc"], ref["acc"])
    _close(mine["loss"], ref["loss"])
    for field in ("mean", "standard_error_of_mean", "standard_deviation"):
        _close(getattr(mine["wf"], field), getattr(ref["wf"], field))
