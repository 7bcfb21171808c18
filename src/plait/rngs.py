"""Explicit, named RNG streams.

:class:`Rngs` holds named :class:`RngStream` objects. A stream is two Variables: a key
(``RngKey``) and a counter (``RngCount``). Drawing a key is ``fold_in(key, count)`` and
then ``count += 1``, so every draw is new and the state that changes is a small integer
that transforms carry back out like any other Variable.

``rngs.params()`` draws from the ``params`` stream; a name with no stream of its own falls
back to the ``default`` stream (the one ``Rngs(0)`` creates), so ``Rngs(0)`` serves layers
that ask for ``params`` and ``dropout`` alike. With no such stream and no default, the
draw raises :class:`~plait.errors.RngError`.

Streams and ``Rngs`` also sample directly, with ``jax.random``'s signatures minus the key:
``rngs.normal((2, 3))`` draws from ``default``, ``rngs.dropout.bernoulli(0.9, (4,))`` from
``dropout``; ``rngs.lecun_normal()`` gives a keyless initializer. These names always mean
the sampler (unless a stream of that name exists), and so do the names of Rngs' methods
(``split``, ``fork``, ...). A name with no stream falls back to ``default`` only when it
could be a stream name: private names (``_x``) and names that array and pytree code probe
for (``shape``, ``dtype``, ``value``, ``key``, ``tag``, ...) are an ``AttributeError``
instead, so ``hasattr(rngs, "shape")`` is False.

``rngs.split(4)`` / ``rngs.fork()`` / ``rngs.broadcast(4)`` make *new* Rngs whose streams
are seeded by one draw of each of these (a split or broadcast has a leading axis of keys);
:func:`with_rngs` does that to every stream inside any module or pytree and returns a
copy; :func:`fork_rngs` forks streams in place, like :func:`split_rngs`.

Transforms never split streams by themselves. :func:`split_rngs` says where: it replaces
each stream's key with ``splits`` keys for the duration of a call (so ``vmap``/``scan`` can
map them) and restores the unsplit stream afterwards; each split consumes one draw of the
stream, so the next split gives new keys.

Example:
    >>> import plait as nnx
    >>> rngs = nnx.Rngs(0, dropout=1)
    >>> k1, k2 = rngs.params(), rngs.params()        # no 'params' stream: uses default
    >>> bool((k1 != k2)), int(rngs.default.count.value)
    (True, 2)
    >>> with nnx.split_rngs(rngs, splits=4):
    ...     rngs.dropout.key.value.shape
    (4,)
    >>> rngs.dropout.key.value.shape
    ()
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from .encoding import flatten, unflatten
from .errors import MissingStreamError, RngError
from .filters import All, Filter, to_predicate
from .graph import iter_graph
from .object import Object
from .state import State, split_state
from .variables import RngCount, RngKey, Variable

__all__ = [
    "Rngs", "RngStream", "split_rngs", "SplitBackups", "restore_rngs", "fork", "fork_rngs", "with_rngs", "reseed",
    "ForkStates",
]

_NOT_GIVEN: Any = object()

# jax.random's samplers, as methods that draw their own key (the reference's list)
SAMPLERS = (
    "bits", "uniform", "randint", "permutation", "choice", "normal", "multivariate_normal", "truncated_normal",
    "bernoulli", "beta", "cauchy", "dirichlet", "exponential", "gamma", "loggamma", "poisson", "gumbel",
    "categorical", "laplace", "logistic", "pareto", "t", "chisquare", "f", "rademacher", "maxwell",
    "double_sided_maxwell", "weibull_min", "orthogonal", "generalized_normal", "ball", "rayleigh", "wald",
    "geometric", "triangular", "lognormal", "binomial", "multinomial",
)
# jax.nn.initializers' random ones, as methods giving keyless initializers (those whose names
# are not already samplers, as in the reference)
INITIALIZERS = (
    "delta_orthogonal", "glorot_normal", "glorot_uniform", "he_normal", "he_uniform", "kaiming_normal",
    "kaiming_uniform", "lecun_normal", "lecun_uniform", "variance_scaling", "xavier_normal", "xavier_uniform",
)
# Names array and pytree code probes with hasattr/getattr: never a fallback to `default`.
_NOT_STREAMS = frozenset({"shape", "dtype", "ndim", "size", "aval", "value", "key", "count", "tag", "sharding",
                          "device", "devices", "keys", "values", "get"})


def _sampler(name: str) -> Callable:
    fn = getattr(jax.random, name)

    def sample(self: Any, *args: Any, **kwargs: Any) -> jax.Array:
        return fn(self(), *args, **kwargs)

    sample.__name__ = sample.__qualname__ = name
    sample.__doc__ = f"Draw a key and return ``jax.random.{name}(key, *args, **kwargs)``."
    params = list(inspect.signature(fn).parameters.values())[1:]
    sample.__signature__ = inspect.Signature([inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY), *params])
    return sample


def _initializer(name: str) -> Callable:
    make = getattr(jax.nn.initializers, name)

    def initializer(self: Any, *args: Any, **kwargs: Any) -> Callable:
        init = make(*args, **kwargs)

        def keyless(*init_args: Any, **init_kwargs: Any) -> jax.Array:  # (shape, dtype=...)
            return init(self(), *init_args, **init_kwargs)

        return keyless

    initializer.__name__ = initializer.__qualname__ = name
    initializer.__doc__ = (f"``jax.nn.initializers.{name}(*args, **kwargs)`` without its key argument: "
                           "each call of the result draws a key, ``init(shape, dtype)``.")
    return initializer


class _Sampling:
    """The samplers and initializers, for anything whose call gives a new key."""

    __slots__ = ()


for _name in SAMPLERS:
    if hasattr(jax.random, _name):
        setattr(_Sampling, _name, _sampler(_name))
for _name in INITIALIZERS:
    setattr(_Sampling, _name, _initializer(_name))


def _as_key(key: Any, tag: str) -> jax.Array:
    if isinstance(key, (int,)) or (hasattr(key, "dtype") and jnp.issubdtype(key.dtype, jnp.integer) and jnp.ndim(key) == 0):
        return jax.random.key(key)
    if hasattr(key, "dtype") and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key
    if hasattr(key, "dtype") and key.dtype == jnp.uint32:
        return jax.random.wrap_key_data(key)
    raise RngError(
        f"stream {tag!r}: expected an int seed or a JAX key, got {type(key).__name__}.\n"
        f"Write nnx.Rngs({tag}=0) or nnx.Rngs({tag}=jax.random.key(0))"
    )


class RngStream(Object, _Sampling):
    """One named stream: a key and a counter; samples like ``jax.random`` minus the key.

    Example:
        >>> import plait as nnx
        >>> stream = nnx.RngStream(0, tag="dropout")
        >>> _ = stream(); int(stream.count.value)
        1
        >>> stream.uniform((2,)).shape, int(stream.count.value)
        ((2,), 2)
    """

    def __init__(self, key: Any, *, tag: str) -> None:
        key = _as_key(key, tag)
        self.key = RngKey(key, tag=tag)
        self.count = RngCount(jnp.zeros(jnp.shape(key), jnp.uint32), tag=tag)
        self.tag = tag

    def __call__(self) -> jax.Array:
        """Draw a new key: ``fold_in(key, count)``, then advance the count."""
        key = self.key.value
        if jnp.ndim(key) != 0:
            raise RngError(
                f"stream {self.tag!r} is split (its key has shape {tuple(jnp.shape(key))}), so it "
                "cannot give one key here.\n"
                "Draw from it inside the vmap/scan that maps its split axis, or draw before "
                "splitting it with nnx.split_rngs."
            )
        count = self.count.value
        self.count.value = count + 1
        return jax.random.fold_in(key, count)

    def fork(self, *, split: int | tuple[int, ...] | None = None) -> RngStream:
        """A new stream seeded by one draw of this one (split into ``split`` keys if given)."""
        key = self()
        if split is not None:
            key = jax.random.split(key, split)
        return type(self)(key, tag=self.tag)

    def split(self, k: int | tuple[int, ...]) -> RngStream:
        """A new stream of ``k`` keys (a leading axis) split from one draw of this one.

        Example:
            >>> import plait as nnx
            >>> nnx.RngStream(0, tag="params").split((2, 3)).key.value.shape
            (2, 3)
        """
        return type(self)(jax.random.split(self(), k), tag=self.tag)

    def broadcast(self, k: int | tuple[int, ...]) -> RngStream:
        """A new stream whose key is one draw of this one repeated ``k`` times (a leading axis
        of equal keys: every lane draws the same numbers)."""
        key = self()
        shape = (k,) if isinstance(k, int) else tuple(k)
        return type(self)(jnp.broadcast_to(key, shape + key.shape), tag=self.tag)


class Rngs(Object, _Sampling):
    """A set of named RNG streams: ``Rngs(seed)``, ``Rngs(params=0, dropout=1)``, or both.

    ``rngs.NAME()`` or ``rngs['NAME']()`` draws from stream ``NAME``, falling back to
    ``default`` when there is no such stream; ``rngs()`` draws from ``default``, and so do
    the samplers: ``rngs.normal((2,))``.

    Example:
        >>> import plait as nnx
        >>> rngs = nnx.Rngs(params=0)
        >>> rngs.params().shape
        ()
        >>> try:
        ...     rngs.dropout()
        ... except nnx.RngError as e:
        ...     print(str(e).splitlines()[0])
        no RNG stream 'dropout' and no 'default' stream to fall back to (streams: params)
        >>> nnx.Rngs(0).normal((2, 3)).shape
        (2, 3)
    """

    def __init__(self, default: Any = None, /, **streams: Any) -> None:
        if isinstance(default, Mapping):
            streams = {**default, **streams}
        elif default is not None:
            streams = {"default": default, **streams}
        for name, key in streams.items():
            if isinstance(key, RngStream):
                key = key()
            object.__setattr__(self, name, RngStream(key, tag=name))

    def streams(self) -> dict[str, RngStream]:
        return {k: v for k, v in self.__dict__.items() if isinstance(v, RngStream)}

    def _stream(self, name: str) -> RngStream:
        d = self.__dict__
        stream = d.get(name)
        if isinstance(stream, RngStream):
            return stream
        stream = d.get("default")
        if isinstance(stream, RngStream):
            return stream
        names = list(self.streams())
        close = difflib.get_close_matches(name, names, n=1)
        hint = f"\nDid you mean {close[0]!r}?" if close else ""
        raise MissingStreamError(
            f"no RNG stream {name!r} and no 'default' stream to fall back to "
            f"(streams: {', '.join(names) or 'none'}){hint}\n"
            f"Create it: nnx.Rngs({name}=0), or give a default: nnx.Rngs(0)"
        )

    def __getattr__(self, name: str) -> RngStream:
        if name.startswith("_") or name in _NOT_STREAMS:
            if name.startswith("__"):
                raise AttributeError(name)
            raise MissingStreamError(
                f"Rngs has no attribute {name!r}, and it is not taken for an RNG stream name "
                f"(streams: {', '.join(self.streams()) or 'none'}).\n"
                f"A stream's state is rngs.STREAM.key / rngs.STREAM.count; to have a stream called {name!r}, "
                f"create it: nnx.Rngs(0, **{{{name!r}: 1}})"
            )
        return self._stream(name)

    def __getitem__(self, name: str) -> RngStream:
        return self._stream(name)

    def __contains__(self, name: Any) -> bool:
        return isinstance(self.__dict__.get(name), RngStream)

    def __iter__(self) -> Iterator[str]:
        return iter(self.streams())

    def __len__(self) -> int:
        return len(self.streams())

    def items(self) -> Iterator[tuple[str, RngStream]]:
        return iter(self.streams().items())

    def __call__(self) -> jax.Array:
        return self._stream("default")()

    def fork(self, *, split: Any = None) -> Rngs:
        """New Rngs whose streams are seeded by one draw of each of these; ``split`` (an int,
        a shape, or ``{filter: int, shape or None}``) splits those it selects into that many keys.

        Example:
            >>> import plait as nnx
            >>> rngs = nnx.Rngs(params=0, dropout=1)
            >>> child = rngs.fork(split={"params": 2})
            >>> child.params.key.value.shape, child.dropout.key.value.shape
            ((2,), ())
        """
        return fork(self, split=split)

    def split(self, k: Any) -> Rngs:
        """New Rngs with streams of ``k`` keys each, split from one draw of these; ``k`` is
        an int, a shape, or ``{filter: int, shape or None}`` (first match wins; ``None`` and
        unmatched streams are shared with this Rngs, not copied, so no key repeats).

        Example:
            >>> import plait as nnx
            >>> rngs = nnx.Rngs(params=0, dropout=1)
            >>> new = rngs.split({"params": 4, ...: None})
            >>> new.params.key.value.shape, new.dropout is rngs.dropout
            ((4,), True)
        """
        return self._derive(k, "split")

    def broadcast(self, k: Any) -> Rngs:
        """Like :meth:`split`, but each selected stream's new key is one draw repeated ``k`` times."""
        return self._derive(k, "broadcast")

    def _derive(self, k: Any, how: str) -> Rngs:
        rules = _size_rules(k, how)
        new = Rngs()
        for name, stream in self.streams().items():
            size = _rule_for(rules, (name,), stream, None)
            object.__setattr__(new, name, stream if size is None else getattr(stream, how)(size))
        return new


def _size_rules(k: Any, what: str) -> list:
    """``k`` (an int, a shape, None or ``{filter: size}``) as ``[(filter, predicate, size), ...]``."""
    if k is None or isinstance(k, (int, tuple)):
        return [(..., to_predicate(...), k)]
    if isinstance(k, Mapping):
        return [(f, to_predicate(f), size) for f, size in k.items()]
    raise RngError(f"{what}: expected an int, a tuple of ints or a {{filter: size}} mapping, got {k!r}")


def _stream_matches(predicate: Callable, path: tuple, stream: RngStream) -> bool:
    # a stream is selected by its tag ('dropout'), its path, or its Variables' types (nnx.RngKey)
    return predicate(path, stream) or predicate(path + ("key",), stream.key)


def _rule_for(rules: list, path: tuple, stream: RngStream, default: Any) -> Any:
    for _, predicate, size in rules:
        if _stream_matches(predicate, path, stream):
            return size
    return default


class ForkStates(NamedTuple):
    """What ``fork(state, split_filter, split_pattern)`` returns (the reference's 0.10 functional
    fork): the RNG state of a State in four parts, the selected streams' keys already split."""

    split_keys: State
    split_counts: State
    broadcast_keys: State
    broadcast_counts: State


def fork(rngs: Any, split_filter: Filter = _NOT_GIVEN, split_pattern: Any = _NOT_GIVEN, *,
         split: Any = None) -> Any:
    """New Rngs whose streams are seeded by one draw of each stream of ``rngs``; ``split``
    as in :meth:`Rngs.fork`.

    The reference's 0.10 functional form ``fork(state, split_filter, split_pattern)`` takes the
    RNG State of a graph instead and returns :class:`ForkStates`: the keys and counts of the
    streams ``split_filter`` selects (keys split into ``split_pattern``, an int or a shape
    whose ``None`` entries count as 1) and those of the rest, unchanged.

    Example:
        >>> import plait as nnx
        >>> child = nnx.fork(nnx.Rngs(0), split=3)
        >>> child.default.key.value.shape
        (3,)
        >>> _, rng_state = nnx.split(nnx.Rngs(params=0, dropout=1), nnx.RngState)
        >>> forked = nnx.fork(rng_state, "params", 4)
        >>> forked.split_keys["params"]["key"].value.shape, sorted(forked.broadcast_keys)
        ((4,), ['dropout'])
    """
    if split_filter is not _NOT_GIVEN or split_pattern is not _NOT_GIVEN:
        return _fork_state(rngs, split_filter, split_pattern)
    rules = _size_rules(split, "fork")
    new = Rngs()
    for name, stream in rngs.streams().items():
        object.__setattr__(new, name, stream.fork(split=_rule_for(rules, (name,), stream, None)))
    return new


def _fork_state(state: Any, split_filter: Filter, split_pattern: Any) -> ForkStates:
    if split_filter is _NOT_GIVEN or split_pattern is _NOT_GIVEN or split_pattern is None:
        raise RngError("fork(state, split_filter, split_pattern) needs both a filter and a split pattern (an int or "
                       "a shape), e.g. nnx.fork(rng_state, 'params', 4)")
    if isinstance(split_pattern, int):
        shape: Any = split_pattern
    else:
        shape = tuple(1 if n is None else n for n in split_pattern)
    state = state if isinstance(state, State) else State(state)
    keys, counts, other_keys, other_counts = split_state(
        state, All(split_filter, RngKey), All(split_filter, RngCount), RngKey, RngCount)
    keys = jax.tree.map(lambda key: jax.random.split(key, shape), keys)
    return ForkStates(keys, counts, other_keys, other_counts)


class SplitBackups:
    """What :func:`split_rngs` changed; restoring puts the unsplit keys back.

    Also a context manager: ``with nnx.split_rngs(rngs, splits=4): ...``.
    """

    def __init__(self, entries: list[tuple[RngStream, Any, Any, Any]]) -> None:
        self.entries = entries  # (stream, key, count before the split's draw, count after it)

    def restore(self) -> None:
        """Put the unsplit keys back; the counts keep the draw each split consumed."""
        for stream, key, _, count in self.entries:
            stream.key.value = key
            stream.count.value = count
        self.entries = []

    def rollback(self) -> None:
        """Undo the splits entirely, draws included (used when a split fails part way)."""
        for stream, key, count, _ in self.entries:
            stream.key.value = key
            stream.count.value = count
        self.entries = []

    def __enter__(self) -> SplitBackups:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.restore()


def restore_rngs(backups: SplitBackups) -> None:
    """Undo a :func:`split_rngs` made without ``with`` or a decorator."""
    backups.restore()


def _split_streams(node: Any, splits: int | tuple[int, ...], only: Filter, squeeze: bool) -> SplitBackups:
    if squeeze and splits not in (1, (1,)):
        raise RngError(f"split_rngs(squeeze=True) needs splits=1, got splits={splits!r}")
    predicate = to_predicate(only)
    entries = []
    try:
        for path, value in iter_graph(node):
            if not isinstance(value, RngStream):
                continue
            if not (predicate(path, value) or predicate(path + ("key",), value.key)):
                continue
            if jnp.ndim(value.key.value) != 0:
                raise RngError(
                    f"split_rngs: stream {value.tag!r} at `{'.'.join(map(str, path)) or '<root>'}` is "
                    f"already split (key shape {tuple(jnp.shape(value.key.value))}).\n"
                    "Put the inner split_rngs inside the vmap/scan that maps the outer split, "
                    "so that it sees one key per lane."
                )
            before = value.count.value
            key = value()  # the split consumes one draw: the next split gives new keys
            entries.append((value, value.key.value, before, value.count.value))
            if squeeze:
                new_key = key
            else:
                new_key = jax.random.split(key, splits)
            value.key.value = new_key
            value.count.value = jnp.zeros(jnp.shape(new_key), jnp.uint32)
    except BaseException:
        SplitBackups(entries).rollback()
        raise
    return SplitBackups(entries)


_MISSING = object()


def split_rngs(
    node: Any = _MISSING,
    *,
    splits: int | tuple[int, ...],
    only: Filter = ...,
    squeeze: bool = False,
    graph: bool | None = None,
    graph_updates: bool | None = None,
) -> Any:
    """Split RNG streams into ``splits`` keys, for the length of a call or a ``with`` block.

    As a decorator (no ``node``), it splits every stream reachable from the call's
    arguments, runs the function, and restores the streams, also on an exception. Given a
    ``node`` it splits now and returns a :class:`SplitBackups` (a context manager).
    ``only`` is a filter on streams (a stream name such as ``'dropout'``, ``nnx.RngState``, ...).
    ``squeeze=True`` (with ``splits=1``) reseeds each stream from one draw without adding an axis.
    ``graph_updates=False`` leaves the streams as they are (but for the draw each split
    consumes) and returns a copy of ``node`` with split streams instead (the decorator
    passes such copies to the function), as :func:`with_rngs` does.

    Example:
        >>> import plait as nnx
        >>> @nnx.split_rngs(splits=3)
        ... @nnx.vmap(axis_size=3)
        ... def create(rngs):
        ...     return nnx.Linear(2, 2, rngs=rngs)
        >>> create(nnx.Rngs(0)).kernel.value.shape
        (3, 2, 2)
    """
    _check_graph_modes("split_rngs", graph, None, copies=False)
    if node is not _MISSING:
        if callable(node) and not isinstance(node, (Object, Variable)):
            raise TypeError("split_rngs takes keyword arguments only when used as a decorator: @nnx.split_rngs(splits=3)")
        if graph_updates is False:
            return _split_copy(node, splits, only, squeeze)
        return _split_streams(node, splits, only, squeeze)

    def decorator(f: Callable) -> Callable:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if graph_updates is False:
                args, kwargs = _split_copy((args, kwargs), splits, only, squeeze)
                return f(*args, **kwargs)
            with _split_streams((args, kwargs), splits, only, squeeze):
                return f(*args, **kwargs)

        return wrapper

    return decorator


def _split_copy(node: Any, splits: Any, only: Filter, squeeze: bool) -> Any:
    if squeeze and splits not in (1, (1,)):
        raise RngError(f"split_rngs(squeeze=True) needs splits=1, got splits={splits!r}")
    predicate = to_predicate(only)

    def split(path: tuple, stream: RngStream) -> RngStream | None:
        if not _stream_matches(predicate, path, stream):
            return None
        if jnp.ndim(stream.key.value) != 0:
            raise RngError(
                f"split_rngs: stream {stream.tag!r} at `{'.'.join(map(str, path)) or '<root>'}` is already split "
                f"(key shape {tuple(jnp.shape(stream.key.value))}); split it inside the vmap/scan that maps it."
            )
        key = stream()
        return RngStream(key if squeeze else jax.random.split(key, splits), tag=stream.tag)

    return _copy_with_streams(node, split)


def _check_graph_modes(what: str, graph: Any, graph_updates: Any, copies: bool) -> None:
    # plait has one mode: graphs keep their sharing. graph=False (the reference's tree mode)
    # gives the same result on graphs without sharing, so it is accepted.
    if graph not in (None, True, False):
        raise RngError(f"{what}: graph must be True, False or None, got {graph!r}")
    if copies and graph_updates:
        raise RngError(
            f"{what} returns a copy with new streams; it cannot update the streams in place (graph_updates=True).\n"
            "To change streams in place for a call, use nnx.split_rngs(...) or nnx.fork_rngs(...) as a context "
            "manager or decorator."
        )


def _copy_with_streams(node: Any, decide: Callable[[tuple, RngStream], RngStream | None]) -> Any:
    """A copy of ``node``: new Objects, the same Variables (as in the reference), except that
    each stream ``decide`` returns a new stream for gets that stream's new key and count."""
    flat, leaves = flatten((node,))
    # Variables are reused as they are (their values are these leaves), Objects made anew
    reuse = [o if isinstance(o, Variable) else None for o in flat.objs]
    roots, objs = unflatten(flat.graphdef, leaves, reuse=reuse)
    for i, obj in enumerate(flat.objs):
        if isinstance(obj, RngStream):
            new = decide(flat.node_paths[i][1:], obj)  # draws from the original stream
            if new is not None:
                objs[i].key, objs[i].count = new.key, new.count
    return roots[0]


def with_rngs(
    node: Any = _MISSING,
    /,
    *,
    split: Any = None,
    fork: Filter | list | tuple | None = None,
    broadcast: Any = None,
    only: Filter = True,
    graph: bool | None = None,
    graph_updates: bool | None = None,
) -> Any:
    """A copy of ``node`` (any module or pytree of them) whose RNG streams are split, broadcast
    or forked: the reference's ``nnx.with_rngs``.

    ``split`` / ``broadcast``: an int, a shape, or ``{filter: size}`` (first match wins);
    ``fork``: a filter or a list of filters of streams to fork; ``only``: which streams to
    touch at all. A stream selected by two rules is an error unless one of them is the
    catch-all ``...``, and then split wins over broadcast over fork. Each new stream is
    seeded by one draw of the original; the copy holds new modules but the same Variables
    as ``node`` except for those streams. Without ``node`` it is a decorator that applies
    to the call's arguments.

    Example:
        >>> import plait as nnx
        >>> rngs = nnx.Rngs(params=0, dropout=1)
        >>> new = nnx.with_rngs(rngs, split={"params": 4}, fork=nnx.Not("params"))
        >>> new.params.key.value.shape, new.dropout.key.value.shape, int(rngs.dropout.count.value)
        ((4,), (), 1)
    """
    _check_graph_modes("with_rngs", graph, graph_updates, copies=True)
    if node is _MISSING:

        def decorator(f: Callable) -> Callable:
            @functools.wraps(f)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                args, kwargs = with_rngs((args, kwargs), split=split, fork=fork, broadcast=broadcast, only=only)
                return f(*args, **kwargs)

            return wrapper

        return decorator

    splits = _size_rules({} if split is None else split, "with_rngs(split=...)")
    broadcasts = _size_rules({} if broadcast is None else broadcast, "with_rngs(broadcast=...)")
    forks = [] if fork is None else ([fork] if isinstance(fork, str) or not isinstance(fork, (list, tuple)) else list(fork))
    fork_rules = [(f, to_predicate(f), None) for f in forks]
    only_predicate = to_predicate(only)

    def decide(path: tuple, stream: RngStream) -> RngStream | None:
        if not _stream_matches(only_predicate, path, stream):
            return None
        found = {}
        for rule, rules in (("split", splits), ("broadcast", broadcasts), ("fork", fork_rules)):
            for f, predicate, size in rules:
                if _stream_matches(predicate, path, stream):
                    found[rule] = (f, size)
                    break
        specific = [rule for rule, (f, _) in found.items() if f is not Ellipsis and f is not True]
        if len(specific) > 1:
            which = ", ".join(f"{rule} (filter {found[rule][0]!r})" for rule in specific)
            raise RngError(
                f"with_rngs: the stream {stream.tag!r} at `{'.'.join(map(str, path)) or '<root>'}` is selected by "
                f"several rules: {which}.\nMake the filters disjoint, e.g. fork=nnx.Not('params') beside split={{'params': 4}}"
            )
        for rule in ("split", "broadcast"):
            if rule in found and found[rule][1] is not None:
                return getattr(stream, rule)(found[rule][1])
        return stream.fork() if "fork" in found else None

    return _copy_with_streams(node, decide)


def fork_rngs(
    node: Any = _MISSING,
    /,
    *,
    split: Any = None,
    graph: bool | None = None,
    graph_updates: bool | None = None,
) -> Any:
    """Fork the RNG streams reachable from ``node`` in place: each gets a new key from one of
    its draws (split into ``split`` keys where ``split``, an int, a shape or
    ``{filter: size or None}``, says so). Returns :class:`SplitBackups` (a context manager;
    leaving it puts the old keys back); as a decorator (no ``node``) it forks the streams of
    the call's arguments for the call. With ``graph_updates=False`` it returns a forked copy
    instead (as :func:`with_rngs`).

    Example:
        >>> import plait as nnx
        >>> rngs = nnx.Rngs(0)
        >>> with nnx.fork_rngs(rngs, split=2):
        ...     rngs.default.key.value.shape
        (2,)
        >>> rngs.default.key.value.shape, int(rngs.default.count.value)
        ((), 1)
    """
    _check_graph_modes("fork_rngs", graph, None, copies=False)
    if node is _MISSING:

        def decorator(f: Callable) -> Callable:
            @functools.wraps(f)
            def wrapper(*args: Any, **kwargs: Any) -> Any:
                if graph_updates is False:
                    args, kwargs = fork_rngs((args, kwargs), split=split, graph_updates=False)
                    return f(*args, **kwargs)
                with fork_rngs((args, kwargs), split=split):
                    return f(*args, **kwargs)

            return wrapper

        return decorator

    rules = _size_rules(split, "fork_rngs(split=...)")

    def forked(path: tuple, stream: RngStream) -> RngStream | None:
        for _, predicate, size in rules:
            if _stream_matches(predicate, path, stream):
                return stream.fork(split=size)
        return None

    if graph_updates is False:
        return _copy_with_streams(node, forked)
    entries = []
    try:
        for path, value in iter_graph(node):
            if isinstance(value, RngStream):
                key, before = value.key.value, value.count.value
                new = forked(path, value)
                if new is not None:
                    entries.append((value, key, before, value.count.value))
                    value.key.value, value.count.value = new.key.value, new.count.value
    except BaseException:
        SplitBackups(entries).rollback()
        raise
    return SplitBackups(entries)


def reseed(node: Any, *, policy: Any = "scalars_only", **seeds: Any) -> None:
    """Give the named streams reachable from ``node`` new keys and reset their counts.

    A stream whose key is split (not a scalar) is an error with ``policy='scalars_only'``
    (the default); ``policy='match_shape'`` splits the new key to its shape; a function
    ``(path, key, shape) -> key`` decides itself.

    Example:
        >>> import plait as nnx
        >>> a, b = nnx.Rngs(dropout=0), nnx.Rngs(dropout=5)
        >>> nnx.reseed(b, dropout=0)
        >>> bool(a.dropout() == b.dropout())
        True
    """
    if policy == "scalars_only":
        policy = _scalars_only
    elif policy == "match_shape":
        policy = _match_shape
    elif not callable(policy):
        raise RngError(f"reseed: policy must be 'scalars_only', 'match_shape' or a function (path, key, shape) -> key, "
                       f"got {policy!r}")
    for path, value in iter_graph(node):
        if isinstance(value, RngStream) and value.tag in seeds:
            key = policy(path, _as_key(seeds[value.tag], value.tag), tuple(jnp.shape(value.key.value)))
            value.key.value = key
            value.count.value = jnp.zeros(jnp.shape(key), jnp.uint32)


def _scalars_only(path: tuple, key: jax.Array, shape: tuple) -> jax.Array:
    if shape != ():
        raise RngError(
            f"reseed: the stream at `{'.'.join(map(str, path)) or '<root>'}` is split (key shape {shape}), and a "
            "seed gives one key.\nSplit the new key to its shape: nnx.reseed(node, policy='match_shape', ...)"
        )
    return key


def _match_shape(path: tuple, key: jax.Array, shape: tuple) -> jax.Array:
    return key if shape == () else jax.random.split(key, shape)
