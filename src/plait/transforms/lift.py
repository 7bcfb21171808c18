"""How every transform moves modules across a JAX transform boundary.

1. Outside: :class:`Call` flattens the call's arguments jointly (one GraphDef, one list of
   leaves, the caller's objects by node index). Each leaf is a Variable value, an array
   held by a module, or a plain argument array.
2. Inside the JAX transform: :func:`enter` rebuilds fresh objects from the GraphDef and the
   traced leaves, and the user function runs on them.
3. Still inside: :func:`collect` flattens the (possibly changed) inputs together with the
   output. It records, as static information, the new GraphDef, which of its objects are
   input objects, and which input leaves were written.
4. Outside again: :meth:`Call.write_back` writes the new values into the caller's objects
   (and the new structure, if it changed) and rebuilds the output, mapping input objects to
   the caller's own objects so that identity holds across the boundary.

A transform only decides which leaves go where (mapped, carried, broadcast,
differentiated) and calls JAX on flat lists of arrays.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from .. import object as _object
from ..errors import TransformError, describe
from ..graph import Flat, GraphDef, flatten, unflatten

__all__ = ["Call", "Collected", "enter", "collect", "reject_removed_kwargs"]


class Collected:
    """Static facts about one traced call: the output GraphDef and how it maps to inputs."""

    __slots__ = ("graphdef", "origin", "same", "input_leaf", "changed", "n_roots")

    def __init__(self, graphdef: GraphDef, origin: tuple, same: bool, input_leaf: tuple, changed: tuple, n_roots: int):
        self.graphdef = graphdef  # GraphDef of (*input roots, output)
        self.origin = origin  # per node: index of the input node it is, or -1 if new
        self.same = same  # input structure unchanged (leaf k of the output is input leaf k)
        self.input_leaf = input_leaf  # per leaf: the input leaf it continues, or -1 if new
        self.changed = changed  # per leaf: an input leaf that was written, or a new leaf
        self.n_roots = n_roots

    def out_leaves(self) -> list[int]:
        """Indices of leaves that belong to the output alone (not reachable from inputs)."""
        n = self.n_roots
        return [k for k, p in enumerate(self.graphdef.leaf_paths) if p[0] == n]


def enter(graphdef: GraphDef, leaves: list) -> tuple[tuple, list]:
    """Inside a transform: fresh objects for the inputs (see :func:`plait.graph.unflatten`)."""
    return unflatten(graphdef, leaves)


def collect(graphdef: GraphDef, objs: list, leaves: list, roots: tuple, out: Any) -> tuple[Collected, Flat]:
    """Inside a transform: flatten inputs and output together; compare with the inputs."""
    flat2, leaves2 = flatten(tuple(roots) + (out,))
    gd2 = flat2.graphdef
    n_nodes, n_roots = len(graphdef.nodes), len(roots)
    same = gd2.roots[:n_roots] == graphdef.roots and gd2.nodes[:n_nodes] == graphdef.nodes
    position = {id(o): i for i, o in enumerate(objs)}
    origin = tuple(position.get(id(o), -1) for o in flat2.objs)
    n_in = graphdef.num_leaves
    input_leaf = []
    for k, node in enumerate(gd2.leaf_nodes):
        if same and k < n_in:
            input_leaf.append(k)
        elif node >= 0 and origin[node] >= 0:
            input_leaf.append(graphdef.nodes[origin[node]][3])
        else:
            input_leaf.append(-1)
    changed = tuple(i < 0 or leaves2[k] is not leaves[i] for k, i in enumerate(input_leaf))
    return Collected(gd2, origin, same, tuple(input_leaf), changed, n_roots), flat2


def reject_removed_kwargs(transform: str, removed: dict) -> None:
    """The pre-0.9 keyword arguments get an error that shows the new spelling."""
    if not removed:
        return
    name = next(iter(removed))
    if name == "split_rngs":
        raise TypeError(
            f"{transform}() no longer takes split_rngs=: transforms never split RNG streams "
            "themselves. Say where to split with the split_rngs decorator, above the transform:\n"
            "    @nnx.split_rngs(splits=3)\n"
            f"    @nnx.{transform}(...)\n"
            "    def f(rngs): ..."
        )
    if name == "state_axes":
        raise TypeError(
            f"{transform}() no longer takes state_axes=: give a module argument its per-Variable "
            "axes with StateAxes in in_axes:\n"
            f"    @nnx.{transform}(in_axes=(nnx.StateAxes({{nnx.Param: 0, ...: None}}), 0))"
        )
    raise TypeError(f"{transform}() got an unexpected keyword argument {name!r}")


class Call:
    """One call of a transformed function, outside the JAX transform."""

    __slots__ = ("fun", "transform", "args", "kwargs", "roots", "flat", "leaves", "n_args", "names")

    def __init__(self, fun: Callable, transform: str, args: tuple, kwargs: dict, names: list[str] | None = None) -> None:
        self.fun = fun
        self.names = names  # argument names for errors, if not the function's own
        self.transform = transform
        self.args = args
        self.kwargs = kwargs
        self.n_args = len(args)
        self.roots = args + (kwargs,) if kwargs else args
        self.flat, self.leaves = flatten(self.roots)

    @property
    def graphdef(self) -> GraphDef:
        return self.flat.graphdef

    def is_state(self, k: int) -> bool:
        """Leaf ``k`` is held by a Variable or a module (so writes to it go back)."""
        return self.flat.slots[k] is not None or self.flat.graphdef.leaf_owners[k] is not None

    def split_roots(self, roots: tuple) -> tuple[tuple, dict]:
        if self.kwargs:
            return roots[: self.n_args], roots[self.n_args]
        return roots, {}

    def run(self, leaves: list, select: Callable | None = None, target: Callable | None = None,
            prefix: tuple = ()) -> tuple[Any, Collected, Flat]:
        """Inside: rebuild inputs from ``leaves``, call the function, collect inputs and output.

        ``select`` maps the function's raw result to what is collected as the output;
        ``target`` replaces the function (a cond branch, a loop body), called with
        ``*prefix`` before the rebuilt arguments.
        """
        gd = self.flat.graphdef
        roots, objs = enter(gd, leaves)
        args, kwargs = self.split_roots(roots)
        result = (target or self.fun)(*prefix, *args, **kwargs)
        out = select(result) if select is not None else result
        collected, flat2 = collect(gd, objs, leaves, roots, out)
        return result, collected, flat2

    def write_back(self, collected: Collected, leaves: list) -> Any:
        """Outside: write values (and structure) into the caller's objects; return the output."""
        return write_back(self.flat, collected, leaves)

    # -- naming things in errors ------------------------------------------------------------
    def path_text(self, path: tuple) -> str:
        return path_text(self.fun, self.n_args, bool(self.kwargs), path, self.names)

    def describe_leaf(self, k: int) -> str:
        slot = self.flat.slots[k]
        return describe(self.path_text(self.flat.graphdef.leaf_paths[k]), slot if slot is not None else self.leaves[k])


def forward_unchanged(call: Call, collected: Collected, emitted: list[int], values: list) -> list:
    """All leaves of the output GraphDef: unchanged inputs from the caller, the rest from ``values``."""
    full: list = [None] * collected.graphdef.num_leaves
    for k2, i in enumerate(collected.input_leaf):
        if i >= 0:
            full[k2] = call.leaves[i]
    for k2, v in zip(emitted, values):
        full[k2] = v
    return full


def write_back(flat: Flat, collected: Collected, leaves: list) -> Any:
    """See :meth:`Call.write_back`; ``leaves`` are the final values of every output leaf."""
    if collected.same:
        reuse = flat.objs + [None] * (len(collected.graphdef.nodes) - len(flat.objs))
    else:
        reuse = [flat.objs[o] if o >= 0 else None for o in collected.origin]
    roots, _ = unflatten(collected.graphdef, leaves, reuse)
    if not collected.same:
        _object.structure_changed()
    return roots[-1]


def arg_names(fun: Callable) -> list[str]:
    try:
        params = inspect.signature(fun).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def path_text(fun: Callable, n_args: int, has_kwargs: bool, path: tuple, names: list[str] | None = None) -> str:
    root, rest = path[0], path[1:]
    if root < n_args:
        names = names if names is not None else arg_names(fun)
        head = names[root] if root < len(names) else f"args[{root}]"
    elif has_kwargs and root == n_args and rest:
        head, rest = str(rest[0]), rest[1:]
    else:
        head = "<output>"
    return ".".join([head, *map(str, rest)])


_DECORATORS = {"jit", "vmap", "pmap", "scan", "grad", "value_and_grad", "remat", "shard_map", "custom_vjp"}


def check_callable(fun: Any, transform: str) -> None:
    if not callable(fun):
        how = (f"Use it as a decorator, @nnx.{transform}(...), or call nnx.{transform}(f, ...)."
               if transform in _DECORATORS else f"Call it as nnx.{transform}(f, ...) with a function f.")
        raise TransformError(f"{transform} expects a function, got a {type(fun).__name__}.\n{how}")
