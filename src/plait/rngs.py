"""Explicit, named RNG streams.

:class:`Rngs` holds named :class:`RngStream` objects. A stream is two Variables: a key
(``RngKey``) and a counter (``RngCount``). Drawing a key is ``fold_in(key, count)`` and
then ``count += 1``, so every draw is new and the state that changes is a small integer
that transforms carry back out like any other Variable.

``rngs.params()`` draws from the ``params`` stream; a name with no stream of its own falls
back to the ``default`` stream (the one ``Rngs(0)`` creates), so ``Rngs(0)`` serves layers
that ask for ``params`` and ``dropout`` alike. With no such stream and no default, the
draw raises :class:`~plait.errors.RngError`.

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
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from .errors import MissingStreamError, RngError
from .filters import Filter, to_predicate
from .graph import iter_graph
from .object import Object
from .variables import RngCount, RngKey

__all__ = ["Rngs", "RngStream", "split_rngs", "SplitBackups", "restore_rngs", "fork", "reseed"]


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


class RngStream(Object):
    """One named stream: a key and a counter.

    Example:
        >>> import plait as nnx
        >>> stream = nnx.RngStream(0, tag="dropout")
        >>> _ = stream(); int(stream.count.value)
        1
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
        return RngStream(key, tag=self.tag)


class Rngs(Object):
    """A set of named RNG streams: ``Rngs(seed)``, ``Rngs(params=0, dropout=1)``, or both.

    ``rngs.NAME()`` or ``rngs['NAME']()`` draws from stream ``NAME``, falling back to
    ``default`` when there is no such stream; ``rngs()`` draws from ``default``.

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
    """

    def __init__(self, default: Any = None, /, **streams: Any) -> None:
        if default is not None:
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
        if name.startswith("__"):
            raise AttributeError(name)
        return self._stream(name)

    def __getitem__(self, name: str) -> RngStream:
        return self._stream(name)

    def __contains__(self, name: str) -> bool:
        return isinstance(self.__dict__.get(name), RngStream)

    def __call__(self) -> jax.Array:
        return self._stream("default")()

    def fork(self, *, split: int | tuple[int, ...] | None = None) -> Rngs:
        """New Rngs whose streams are seeded by one draw of each of these."""
        return fork(self, split=split)


def fork(rngs: Rngs, *, split: int | tuple[int, ...] | None = None) -> Rngs:
    """New Rngs whose streams are seeded by one draw of each stream of ``rngs``.

    Example:
        >>> import plait as nnx
        >>> child = nnx.fork(nnx.Rngs(0), split=3)
        >>> child.default.key.value.shape
        (3,)
    """
    new = Rngs()
    for name, stream in rngs.streams().items():
        object.__setattr__(new, name, stream.fork(split=split))
    return new


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
) -> Any:
    """Split RNG streams into ``splits`` keys, for the length of a call or a ``with`` block.

    As a decorator (no ``node``), it splits every stream reachable from the call's
    arguments, runs the function, and restores the streams, also on an exception. Given a
    ``node`` it splits now and returns a :class:`SplitBackups` (a context manager).
    ``only`` is a filter on streams (a stream name such as ``'dropout'``, ``nnx.RngState``, ...).
    ``squeeze=True`` (with ``splits=1``) reseeds each stream from one draw without adding an axis.

    Example:
        >>> import plait as nnx
        >>> @nnx.split_rngs(splits=3)
        ... @nnx.vmap(axis_size=3)
        ... def create(rngs):
        ...     return nnx.Linear(2, 2, rngs=rngs)
        >>> create(nnx.Rngs(0)).kernel.value.shape
        (3, 2, 2)
    """
    if node is not _MISSING:
        if callable(node) and not isinstance(node, Object):
            raise TypeError("split_rngs takes keyword arguments only when used as a decorator: @nnx.split_rngs(splits=3)")
        return _split_streams(node, splits, only, squeeze)

    def decorator(f: Callable) -> Callable:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _split_streams((args, kwargs), splits, only, squeeze):
                return f(*args, **kwargs)

        return wrapper

    return decorator


def reseed(node: Any, **seeds: Any) -> None:
    """Give the named streams reachable from ``node`` new keys and reset their counts.

    Example:
        >>> import plait as nnx
        >>> a, b = nnx.Rngs(dropout=0), nnx.Rngs(dropout=5)
        >>> nnx.reseed(b, dropout=0)
        >>> bool(a.dropout() == b.dropout())
        True
    """
    for _, value in iter_graph(node):
        if isinstance(value, RngStream) and value.tag in seeds:
            key = _as_key(seeds[value.tag], value.tag)
            value.key.value = key
            value.count.value = jnp.zeros(jnp.shape(key), jnp.uint32)
