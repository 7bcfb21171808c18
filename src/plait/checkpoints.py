"""Checkpoints: save modules and optimizers every N steps, keep the last K, resume in place.

A plait ``State`` is a pytree of arrays, so orbax saves and restores it as it is: the
Flax NNX recipe (``ocp.StandardCheckpointer().save(path, nnx.state(model))``, then
``restore(path, abstract_state)`` and ``nnx.update``/``nnx.merge``) works unchanged; see
``docs/checkpoints.md``. This module is the thin layer a training loop wants on top:

- :class:`CheckpointManager` wraps orbax's ``CheckpointManager``. ``save(step, model=...,
  optimizer=...)`` saves when ``step`` is a multiple of ``save_every`` and keeps the last
  ``keep`` checkpoints; ``restore(model=..., optimizer=...)`` writes the latest checkpoint
  into those objects, in place.
- The objects are saved together, as one graph, so an optimizer that holds the model does
  not save the model's parameters twice: each name is one orbax item, holding what is
  reachable from that object and not from an earlier name (in sorted name order).
- Restoring reads every array with the shape, dtype and *sharding* of the array it
  replaces (a ``jax.ShapeDtypeStruct`` per leaf), so a model sharded over a mesh is
  restored onto that mesh. An abstract model (``nnx.eval_shape``) works too: its
  ``ShapeDtypeStruct`` values are the targets.
- Typed RNG keys (``jax.random.key``) are saved as their raw key data and wrapped again on
  restore, so RNG streams round-trip bitwise with any orbax version.
- orbax writes a checkpoint into a temporary directory and renames it when complete, so a
  process killed mid-save leaves the previous checkpoint readable.

orbax is an optional dependency: ``pip install "plait[checkpoint]"``.

Example:
    >>> import tempfile, jax.numpy as jnp, plait as nnx
    >>> model = nnx.Linear(2, 2, rngs=nnx.Rngs(0))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     with nnx.checkpoints.CheckpointManager(d, save_every=10, keep=2) as manager:
    ...         saved = [s for s in range(25) if manager.save(s, model=model)]
    ...         fresh = nnx.Linear(2, 2, rngs=nnx.Rngs(1))
    ...         step = manager.restore(model=fresh)
    >>> saved, manager.all_steps(), step, bool(jnp.all(fresh.kernel.value == model.kernel.value))
    ([0, 10, 20], [10, 20], 20, True)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import jax

from .errors import CheckpointError
from .graph import state, update
from .object import Object

__all__ = ["CheckpointManager"]


def _orbax() -> Any:
    try:
        import orbax.checkpoint as ocp
    except ImportError as e:
        raise ImportError(
            "plait.checkpoints needs orbax-checkpoint, which is not installed.\n"
            'Install it with:   pip install "plait[checkpoint]"   (or: pip install orbax-checkpoint)'
        ) from e
    return ocp


def _is_key(dtype: Any) -> bool:
    return jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _to_disk(value: Any) -> Any:
    """Typed keys become their key data (uint32): older orbax versions cannot save typed keys."""
    return jax.random.key_data(value) if _is_key(getattr(value, "dtype", None)) else value


def _key_impl(target: jax.ShapeDtypeStruct) -> Any:
    # ``key_impl`` wants a key array; a traced one stands in for the abstract target.
    found: list = []
    jax.eval_shape(lambda k: found.append(jax.random.key_impl(k)), target)
    return found[0]


def _target(value: Any) -> Any:
    """What orbax should read for ``value``: its shape, dtype and sharding (key data for keys)."""
    if not hasattr(value, "shape") or not hasattr(value, "dtype"):
        return value
    sharding = getattr(value, "sharding", None)
    if _is_key(value.dtype):
        data = (jax.random.key_data(value) if isinstance(value, jax.Array)  # eager: cheaper than tracing
                else jax.eval_shape(jax.random.key_data, jax.ShapeDtypeStruct(value.shape, value.dtype)))
        return jax.ShapeDtypeStruct(data.shape, data.dtype, sharding=sharding)
    return jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=sharding)


def _from_disk(read: Any, live: Any) -> Any:
    if not _is_key(getattr(live, "dtype", None)):
        return read
    impl = jax.random.key_impl(live) if isinstance(live, jax.Array) else _key_impl(live)
    return jax.random.wrap_key_data(read, impl=impl)


def _flat(tree: Any) -> dict[str, Any]:
    """``{"a/b/0": leaf}`` for a nested dict (how orbax's metadata and our targets compare)."""
    out: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping):
            for k, v in node.items():
                walk(v, f"{prefix}/{k}" if prefix else str(k))
        elif isinstance(node, (list, tuple)) and not hasattr(node, "shape"):
            for i, v in enumerate(node):
                walk(v, f"{prefix}/{i}" if prefix else str(i))
        else:
            out[prefix] = node

    walk(tree, "")
    return out


class _Items(Object):
    """The objects of one save/restore as attributes of one root, so they flatten as one graph
    (an object reachable from two of them is saved once, under the first name in sorted order)."""

    def __init__(self, nodes: dict) -> None:
        for name in sorted(nodes):
            setattr(self, name, nodes[name])


class CheckpointManager:
    """Save modules and optimizers every ``save_every`` steps into ``directory``, keeping the
    last ``keep`` checkpoints (all if ``None``); restore the latest (or a given step) into
    existing objects, in place.

    Args:
        directory: where the checkpoints go (created if missing); one subdirectory per step.
        save_every: :meth:`save` saves only at steps that are multiples of this.
        keep: how many of the most recent checkpoints to keep; older ones are deleted.
        async_save: save in a background thread (orbax's default); :meth:`save` then
            returns once the arrays are copied to host memory. :meth:`restore`, :meth:`wait`
            and :meth:`close` wait for a pending save.

    Use it as a context manager, or call :meth:`close`, so a pending save completes.

    Limitations:
        - Restore with the names used to save. An object reachable from an earlier name (in
          sorted order) is saved only there: an optimizer saved with ``model=`` holds no copy
          of the model, so restoring ``optimizer=`` alone is refused (the paths differ).
        - One process. Multi-host checkpointing (orbax's multiprocessing options) is not
          wired through and is untested.
        - A dtype that differs from the saved one is cast by orbax, not refused.

    Example:
        >>> import tempfile, optax, plait as nnx
        >>> model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
        >>> optimizer = nnx.Optimizer(model, optax.adam(1e-3))
        >>> with tempfile.TemporaryDirectory() as d, nnx.checkpoints.CheckpointManager(d) as manager:
        ...     manager.save(7, model=model, optimizer=optimizer)
        ...     manager.restore(model=model, optimizer=optimizer)
        True
        7
    """

    def __init__(self, directory: str | os.PathLike, *, save_every: int = 1, keep: int | None = None,
                 async_save: bool = True) -> None:
        if not isinstance(save_every, int) or save_every < 1:
            raise CheckpointError(f"CheckpointManager: save_every must be a positive int, got {save_every!r}")
        if keep is not None and (not isinstance(keep, int) or keep < 1):
            raise CheckpointError(f"CheckpointManager: keep must be a positive int or None (keep all), got {keep!r}")
        ocp = _orbax()
        self.directory = os.path.abspath(os.fspath(directory))
        self.save_every = save_every
        self.keep = keep
        options = ocp.CheckpointManagerOptions(save_interval_steps=save_every, max_to_keep=keep, create=True,
                                               enable_async_checkpointing=async_save)
        self._ocp = ocp
        self._manager = ocp.CheckpointManager(self.directory, options=options)
        self._items: tuple = ((), None)

    def _state(self, nodes: dict) -> Any:
        # Reusing the root for the same objects keeps plait's flatten cache warm between saves.
        key = tuple((name, id(nodes[name])) for name in sorted(nodes))
        if self._items[0] != key:
            self._items = (key, _Items(nodes))
        return state(self._items[1])

    # -- saving -------------------------------------------------------------------------------

    def save(self, step: int, *, force: bool = False, **nodes: Any) -> bool:
        """Save the state of ``nodes`` (by name) as ``step`` if ``step`` is due (a multiple of
        ``save_every``; any step with ``force=True``). Returns whether it saved.

        Save the same names every time; :meth:`restore` takes the same names.
        """
        if not nodes:
            raise CheckpointError("CheckpointManager.save: nothing to save. Name what to save, e.g.\n"
                                  "    manager.save(step, model=model, optimizer=optimizer)")
        if not force and not self._manager.should_save(step):
            return False
        pure = self._state(nodes).to_pure_dict()
        ocp = self._ocp
        items = {name: ocp.args.StandardSave(jax.tree.map(_to_disk, pure[name]))
                 for name in nodes if pure.get(name)}
        return bool(self._manager.save(step, args=ocp.args.Composite(**items), force=force))

    # -- restoring ----------------------------------------------------------------------------

    def restore(self, step: int | None = None, **nodes: Any) -> int:
        """Write checkpoint ``step`` (the latest if ``None``) into ``nodes``, in place; returns
        the step. Each array is read with the shape, dtype and sharding of the value it
        replaces. Raises :class:`~plait.CheckpointError` if there is no such checkpoint or it
        does not hold the state of ``nodes``.
        """
        if not nodes:
            raise CheckpointError("CheckpointManager.restore: nothing to restore into. Name the objects, e.g.\n"
                                  "    manager.restore(model=model, optimizer=optimizer)")
        self._manager.wait_until_finished()
        steps = self.all_steps()
        if step is None:
            if not steps:
                raise CheckpointError(f"CheckpointManager.restore: no checkpoint in {self.directory}.\n"
                                      "To resume only when there is one:\n"
                                      "    if manager.latest_step() is not None:\n"
                                      "        manager.restore(model=model, optimizer=optimizer)")
            step = steps[-1]
        elif step not in steps:
            raise CheckpointError(f"CheckpointManager.restore: no checkpoint for step {step} in {self.directory}; "
                                  f"the steps there are {steps}")
        live = self._state(nodes)
        pure = live.to_pure_dict()
        targets = {name: jax.tree.map(_target, pure[name]) for name in nodes if pure.get(name)}
        ocp = self._ocp
        args = ocp.args.Composite(**{name: ocp.args.StandardRestore(t) for name, t in targets.items()})
        try:
            read = self._manager.restore(step, args=args)
        except (ValueError, KeyError, TypeError) as e:
            # orbax refuses a target that does not match (names, paths, shapes); reading the
            # checkpoint's metadata to say where costs as much as the restore, so only now.
            self._check(step, targets)
            raise CheckpointError(f"CheckpointManager.restore: orbax could not restore step {step} into "
                                  f"{', '.join(f'{n}=...' for n in sorted(nodes))}: {e}") from e
        restored = {name: jax.tree.map(_from_disk, read[name], pure[name]) for name in targets}
        live.replace_by_pure_dict(restored)
        update(self._items[1], live)
        return step

    def _check(self, step: int, targets: dict) -> None:
        """Raise a CheckpointError naming what differs if the checkpoint does not hold exactly the
        arrays ``targets`` asks for, with the same shapes."""
        try:
            meta = self._manager.item_metadata(step)
        except Exception:  # the caller reports orbax's own error instead
            return
        names = set(meta.keys()) if isinstance(meta, Mapping) else set(targets)
        for name, target in targets.items():
            if name not in names:
                raise CheckpointError(
                    f"CheckpointManager.restore: the checkpoint of step {step} has no item {name!r}; it has "
                    f"{sorted(names)}. Restore with the names it was saved with.")
            saved = getattr(meta[name], "tree", meta[name])  # orbax's TreeMetadata wraps the tree
            if not isinstance(saved, Mapping):
                continue
            have, want = _flat(saved), _flat(target)
            missing, extra = sorted(set(want) - set(have)), sorted(set(have) - set(want))
            if missing or extra:
                lines = [f"CheckpointManager.restore: {name!r} in the checkpoint of step {step} does not match "
                         f"the state of the object given as {name}=..."]
                if missing:
                    lines.append(f"  not in the checkpoint: {', '.join(missing[:8])}" + (" ..." if len(missing) > 8 else ""))
                if extra:
                    lines.append(f"  only in the checkpoint: {', '.join(extra[:8])}" + (" ..." if len(extra) > 8 else ""))
                lines.append("Build the object as it was when saved, and pass the same names to save() and restore() "
                             "(an optimizer saved with model=... holds no copy of the model's parameters).")
                raise CheckpointError("\n".join(lines))
            for path, t in want.items():
                shape = getattr(have[path], "shape", None)
                if shape is not None and getattr(t, "shape", None) is not None and tuple(shape) != tuple(t.shape):
                    raise CheckpointError(
                        f"CheckpointManager.restore: `{name}/{path}` has shape {tuple(shape)} in the checkpoint of "
                        f"step {step} but {tuple(t.shape)} in the object given as {name}=...; build it with the "
                        "configuration it was saved with.")

    # -- bookkeeping --------------------------------------------------------------------------

    def latest_step(self) -> int | None:
        """The most recent complete checkpoint's step, or ``None`` if there is none."""
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        """The steps of the complete checkpoints, oldest first."""
        return sorted(self._manager.all_steps())

    def wait(self) -> None:
        """Block until a pending (asynchronous) save is complete on disk."""
        self._manager.wait_until_finished()

    def close(self) -> None:
        """Wait for a pending save and release orbax's resources."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> CheckpointManager:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"CheckpointManager({self.directory!r}, save_every={self.save_every}, keep={self.keep})"
