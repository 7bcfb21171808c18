"""The exceptions plait raises.

Every message starts with one line that says what is wrong and where (the module path of
the variable or stream, its type and shape), then explains, then shows the code to write.
Each class also derives from the builtin exception a caller would expect (``ValueError``,
``TypeError``, ...) so existing ``except`` clauses keep working.
"""

from __future__ import annotations

__all__ = [
    "PlaitError",
    "AxisError",
    "GraphError",
    "LayerError",
    "FilterError",
    "RngError",
    "MissingStreamError",
    "StateError",
    "TransformError",
    "MetricError",
    "CheckpointError",
    "VariableError",
    "MissingDependencyError",
]


class PlaitError(Exception):
    """Base class of every error plait raises on purpose."""


class AxisError(PlaitError, ValueError):
    """A mapped, scanned or carried axis does not fit a variable's shape."""


class LayerError(PlaitError, ValueError):
    """A layer got an input (shape, dtype) or a configuration it cannot use."""


class GraphError(PlaitError, ValueError):
    """A module graph cannot be split, merged or updated as asked."""


class FilterError(PlaitError, TypeError):
    """Something given as a filter is not one, or filters leave state unclaimed."""


class RngError(PlaitError, ValueError):
    """An RNG stream is missing, or would be drawn in a way that repeats keys."""


class MissingStreamError(RngError, AttributeError):
    """No RNG stream of that name and no ``default`` (an AttributeError too, so ``hasattr`` works)."""


class StateError(PlaitError, ValueError):
    """A write to state inside a transform cannot be carried back out."""


class TransformError(PlaitError, TypeError):
    """A transform was called with arguments it does not accept."""


class MetricError(PlaitError, TypeError, ValueError):
    """A metric's ``update`` got a missing keyword or values it cannot use (a TypeError and a
    ValueError, as the reference raises either)."""


class CheckpointError(PlaitError, ValueError):
    """A checkpoint is missing, or does not hold the state of the objects to restore into."""


class VariableError(PlaitError, TypeError, ValueError):
    """A Variable was used in a way its value does not allow (``if v:`` on an array, a call
    of a non-function, a metadata request it cannot meet)."""



class MissingDependencyError(PlaitError, ImportError):
    """An optional package a feature needs is not installed (the message names what to install)."""
