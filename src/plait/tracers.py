"""``nnx.tracers``: the reference's trace-level checks. plait checks them itself: an object
or Variable written from another JAX trace than the one it was made in raises a
:class:`~plait.errors.StateError` naming it. There is nothing to call.

Example:
    >>> import plait as nnx
    >>> try:
    ...     nnx.tracers.TraceState
    ... except AttributeError as e:
    ...     print(str(e)[:47])
    plait.tracers has no attribute 'TraceState' (th
"""

from __future__ import annotations

from .namespaces import missing

__all__: list[str] = []

__getattr__ = missing("tracers", {
    name: "plait tracks the JAX trace of every object and Variable itself and refuses writes from another trace"
    for name in ("TraceState", "current_jax_trace")
})
