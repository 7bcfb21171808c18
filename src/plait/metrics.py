"""Metrics: running statistics held in ``MetricState`` Variables, updated in place.

A metric is a graph node like a module: ``update(**kwargs)`` adds a batch, ``compute()``
returns the value so far, ``reset()`` starts again. Its totals and counts are
``MetricState`` Variables, so a jitted eval step that takes the metric writes them back
(and ``nnx.state(metric)`` is what to checkpoint). Each metric reads the keyword arguments
it knows and ignores the rest, which is how one :class:`MultiMetric` call feeds several
metrics: ``metrics.update(loss=loss, logits=logits, labels=labels)``.

=====================  ==================================  ====================================
metric                 ``update`` reads                    ``compute`` returns
=====================  ==================================  ====================================
``Average(argname)``   ``argname`` (``values``), ``mask``  mean of all values seen
``Accuracy()``         ``logits``, ``labels``, ``mask``    fraction of correct predictions
``Welford(argname)``   ``argname`` (``values``)            :class:`Statistics` (mean, SEM, std)
``MultiMetric(**ms)``  all of the above                    ``{name: value}``
=====================  ==================================  ====================================

Example:
    >>> import jax.numpy as jnp, plait as nnx
    >>> metrics = nnx.MultiMetric(loss=nnx.metrics.Average("loss"), accuracy=nnx.metrics.Accuracy())
    >>> @nnx.jit
    ... def eval_step(metrics, logits, labels):
    ...     metrics.update(loss=jnp.ones(2), logits=logits, labels=labels)
    >>> eval_step(metrics, jnp.array([[0.1, 0.9], [0.8, 0.2]]), jnp.array([1, 1]))
    >>> {k: float(v) for k, v in metrics.compute().items()}
    {'loss': 1.0, 'accuracy': 0.5}
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .errors import MetricError
from .filters import Filter
from .graph import split
from .object import Object
from .variables import Variable

__all__ = ["MetricState", "Metric", "Average", "Accuracy", "Welford", "Statistics", "MultiMetric"]


class MetricState(Variable):
    """The state of a metric (running totals, counts)."""

    __slots__ = ()


class Metric(Object):
    """Base class of metrics: subclasses define ``__init__``, ``reset``, ``update`` and ``compute``.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> class Maximum(nnx.Metric):
        ...     def __init__(self):
        ...         self.max = nnx.metrics.MetricState(jnp.array(-jnp.inf))
        ...     def reset(self):
        ...         self.max.value = jnp.array(-jnp.inf)
        ...     def update(self, *, values, **_):
        ...         self.max.value = jnp.maximum(self.max.value, values.max())
        ...     def compute(self):
        ...         return self.max.value
        >>> m = Maximum(); m.update(values=jnp.array([1.0, 3.0])); float(m.compute())
        3.0
    """

    def __init__(self) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define __init__ (and reset, update, compute)")

    def reset(self) -> None:
        """Start again, in place."""
        raise NotImplementedError(f"{type(self).__name__} must define reset()")

    def update(self, **kwargs: Any) -> None:
        """Add a batch, in place."""
        raise NotImplementedError(f"{type(self).__name__} must define update(**kwargs)")

    def compute(self) -> Any:
        """The metric's value over everything added since the last reset."""
        raise NotImplementedError(f"{type(self).__name__} must define compute()")

    def split(self, *filters: Filter) -> tuple:
        """``nnx.split(self, *filters)``."""
        return split(self, *filters)


def _argument(metric: Metric, kwargs: dict, argname: str) -> Any:
    if argname not in kwargs:
        given = ", ".join(sorted(kwargs)) or "none"
        raise MetricError(
            f"{type(metric).__name__}.update needs the keyword argument {argname!r} (given: {given}).\n"
            f"Pass it by name: metric.update({argname}=batch_values), or build the metric to read "
            f"another name: nnx.metrics.{type(metric).__name__}('loss')."
        )
    return kwargs[argname]


class Average(Metric):
    """The mean of every value given to ``update`` since the last reset.

    Args:
        argname: the keyword ``update`` reads the values from (``values`` by default), so that
            several metrics can share one ``update`` call.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> avg = nnx.metrics.Average()
        >>> avg.update(values=jnp.array([1, 2, 3, 4])); avg.update(values=jnp.array([3, 2, 1, 0]))
        >>> float(avg.compute())
        2.0
        >>> avg.update(values=jnp.array([10.0, 100.0]), mask=jnp.array([True, False]))
        >>> float(avg.compute())  # (16 + 10) / 9
        2.888888...
        >>> avg.reset(); float(avg.compute())
        nan
    """

    def __init__(self, argname: str = "values") -> None:
        self.argname = argname
        self.total = MetricState(jnp.array(0, dtype=jnp.float32))
        self.count = MetricState(jnp.array(0, dtype=jnp.int32))

    def reset(self) -> None:
        self.total.value = jnp.array(0, dtype=jnp.float32)
        self.count.value = jnp.array(0, dtype=jnp.int32)

    def update(self, mask: jax.Array | None = None, **kwargs: Any) -> None:
        """Add ``kwargs[argname]`` (an array, or a Python number counted as one value).

        ``mask`` (broadcastable to the values) leaves out the entries where it is 0/False; the
        count grows by ``mask.sum()``.
        """
        values = _argument(self, kwargs, self.argname)
        if isinstance(values, (int, float)):
            if mask is not None:
                raise MetricError(
                    f"{type(self).__name__}.update: a mask needs an array of values, but {self.argname!r} is the "
                    f"Python number {values!r}. Pass {self.argname}=jnp.asarray(...) with the mask's shape."
                )
            self.total.value = self.total.value + values
            self.count.value = self.count.value + 1
            return
        values = jnp.asarray(values)
        if mask is None:
            self.total.value = self.total.value + values.sum()
            self.count.value = self.count.value + values.size
        else:
            mask = jnp.asarray(mask)
            self.total.value = self.total.value + (values * mask.astype(values.dtype)).sum()
            self.count.value = self.count.value + mask.sum().astype(self.count.value.dtype)

    def compute(self) -> jax.Array:
        """``total / count`` (NaN before any update)."""
        return self.total.value / self.count.value


class Accuracy(Average):
    """The fraction of predictions equal to the labels.

    Multi-class (no ``threshold``): the prediction is ``logits.argmax(-1)``, and ``logits`` has one
    more axis than ``labels``. Binary (``threshold`` a float): the prediction is
    ``logits >= threshold``, compared with ``labels > 0``, and both have the same shape.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> acc = nnx.metrics.Accuracy()
        >>> acc.update(logits=jnp.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]]), labels=jnp.array([0, 0, 0]))
        >>> float(acc.compute())
        0.666666...
        >>> binary = nnx.metrics.Accuracy(threshold=0.5)
        >>> binary.update(logits=jnp.array([0.2, 0.7]), labels=jnp.array([0, 0])); float(binary.compute())
        0.5
    """

    def __init__(self, threshold: float | None = None, *args: Any, **kwargs: Any) -> None:
        if threshold is not None and not isinstance(threshold, float):
            raise MetricError(
                f"Accuracy(threshold={threshold!r}): the threshold must be a float (e.g. 0.5) for binary "
                "classification, or None for multi-class."
            )
        self.threshold = threshold
        super().__init__(*args, **kwargs)

    def update(  # type: ignore[override]
        self, *, logits: jax.Array, labels: jax.Array, mask: jax.Array | None = None, **_: Any
    ) -> None:
        """Add a batch of ``logits`` and integer ``labels`` (``mask`` leaves entries out)."""
        logits, labels = jnp.asarray(logits), jnp.asarray(labels)
        if self.threshold is not None and logits.ndim != labels.ndim:
            raise MetricError(
                f"Accuracy(threshold={self.threshold}) (binary): logits and labels need the same number of "
                f"axes, got logits of shape {logits.shape} and labels of shape {labels.shape}."
            )
        if self.threshold is None and logits.ndim != labels.ndim + 1:
            raise MetricError(
                "Accuracy (multi-class): logits need one more axis than labels (the classes), got logits "
                f"of shape {logits.shape} and labels of shape {labels.shape}. For binary predictions, "
                "use nnx.metrics.Accuracy(threshold=0.5)."
            )
        if labels.dtype in (np.int32, np.int64):
            labels = labels.astype(jnp.int32)
        else:
            raise MetricError(
                f"Accuracy: labels must be integers (int32), got {labels.dtype}. Pass class indices, e.g. "
                "labels.astype(jnp.int32)."
            )
        if self.threshold is not None:
            correct = (logits >= self.threshold) == (labels > 0)
        else:
            correct = logits.argmax(axis=-1) == labels
        super().update(values=correct, mask=mask)


@dataclasses.dataclass(frozen=True)
class Statistics:
    """What :class:`Welford` computes: the mean, its standard error, and the standard deviation."""

    mean: jax.Array
    standard_error_of_mean: jax.Array
    standard_deviation: jax.Array


jax.tree_util.register_dataclass(
    Statistics, data_fields=["mean", "standard_error_of_mean", "standard_deviation"], meta_fields=[]
)


class Welford(Metric):
    """Mean and variance of a stream of values, by Welford's algorithm (numerically stable).

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> wf = nnx.metrics.Welford()
        >>> wf.update(values=jnp.array([1.0, 2.0, 3.0, 4.0])); wf.update(values=jnp.array([3.0, 2.0, 1.0, 0.0]))
        >>> stats = wf.compute()
        >>> float(stats.mean), round(float(stats.standard_deviation), 4)
        (2.0, 1.2247)
    """

    def __init__(self, argname: str = "values") -> None:
        self.argname = argname
        self.count = MetricState(jnp.array(0, dtype=jnp.int32))
        self.mean = MetricState(jnp.array(0, dtype=jnp.float32))
        self.m2 = MetricState(jnp.array(0, dtype=jnp.float32))

    def reset(self) -> None:
        # int32 as at construction (the reference resets to uint32, which changes the
        # Variable's dtype and so retraces a jitted step).
        self.count.value = jnp.array(0, dtype=jnp.int32)
        self.mean.value = jnp.array(0, dtype=jnp.float32)
        self.m2.value = jnp.array(0, dtype=jnp.float32)

    def update(self, **kwargs: Any) -> None:
        """Add ``kwargs[argname]`` (an array, or a Python number counted as one value)."""
        values = _argument(self, kwargs, self.argname)
        scalar = isinstance(values, (int, float))
        if not scalar:
            values = jnp.asarray(values)
        count = 1 if scalar else values.size
        old_count = self.count.value
        new_count = old_count + count
        delta = (values if scalar else values.mean()) - self.mean.value
        self.count.value = new_count
        self.mean.value = self.mean.value + delta * count / new_count
        batch_m2 = 0.0 if scalar else values.var() * count
        self.m2.value = self.m2.value + batch_m2 + delta * delta * count * old_count / new_count

    def compute(self) -> Statistics:
        """:class:`Statistics` of everything seen (SEM and deviation are NaN before any update)."""
        variance = self.m2.value / self.count.value
        deviation = variance**0.5
        return Statistics(
            mean=self.mean.value,
            standard_error_of_mean=deviation / self.count.value**0.5,
            standard_deviation=deviation,
        )


_RESERVED = ("reset", "update", "compute", "split")


class MultiMetric(Metric):
    """Several metrics under names, updated by one call.

    ``update(**kwargs)`` passes every keyword to every metric (each reads the ones it knows).
    ``mask`` goes to all of them, or, as a dict ``{name: mask}``, to the named ones only.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> metrics = nnx.MultiMetric(accuracy=nnx.metrics.Accuracy(), loss=nnx.metrics.Average())
        >>> metrics.update(logits=jnp.array([[1.0, 0.0]]), labels=jnp.array([0]), values=jnp.array([3.0]))
        >>> {k: float(v) for k, v in metrics.compute().items()}
        {'accuracy': 1.0, 'loss': 3.0}
    """

    def __init__(self, **metrics: Metric) -> None:
        for name, metric in metrics.items():
            if name in _RESERVED or name.startswith("_"):
                raise MetricError(
                    f"MultiMetric: {name!r} cannot name a metric (it is a method or private name of "
                    f"MultiMetric). Use another name, e.g. MultiMetric({name}_metric=...)."
                )
            if not all(callable(getattr(metric, m, None)) for m in ("reset", "update", "compute")):
                raise MetricError(
                    f"MultiMetric: {name}= is a {type(metric).__name__}, not a metric (it needs reset, update and compute). "
                    "Pass metric objects, "
                    "e.g. MultiMetric(loss=nnx.metrics.Average('loss'))."
                )
        self._metric_names = tuple(metrics)
        for name, metric in metrics.items():
            setattr(self, name, metric)

    def reset(self) -> None:
        for name in self._metric_names:
            getattr(self, name).reset()

    def update(self, **updates: Any) -> None:
        mask = updates.pop("mask", None)
        for name in self._metric_names:
            own_mask = mask.get(name) if isinstance(mask, dict) else mask
            extra = {} if own_mask is None else {"mask": own_mask}
            getattr(self, name).update(**updates, **extra)

    def compute(self) -> dict[str, Any]:
        """``{name: metric.compute()}``."""
        return {name: getattr(self, name).compute() for name in self._metric_names}
