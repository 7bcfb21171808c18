"""Models shared by the transform tests: the seed's Linear + Dropout block and stacks of it."""

import jax.numpy as jnp

import plait as nnx

W, D = 8, 3  # width of a layer, depth of a stack


class Block(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.linear = nnx.Linear(W, W, rngs=rngs)
        self.dropout = nnx.Dropout(0.5, rngs=rngs)

    def __call__(self, x):
        return self.dropout(self.linear(x))


class Counter(nnx.Module):
    """A Linear with a BatchStat-like counter that each call increments."""

    def __init__(self, rngs: nnx.Rngs):
        self.lin = nnx.Linear(W, W, rngs=rngs)
        self.count = nnx.BatchStat(jnp.zeros((), jnp.int32))

    def __call__(self, x):
        self.count.value = self.count.value + 1
        return self.lin(x)


@nnx.split_rngs(splits=D)
@nnx.vmap(axis_size=D)
def create_stack(rngs: nnx.Rngs):
    return Block(rngs)


@nnx.split_rngs(splits=D)
@nnx.vmap(axis_size=D)
def create_linears(rngs: nnx.Rngs):
    return nnx.Linear(W, W, rngs=rngs)


@nnx.split_rngs(splits=D)
@nnx.vmap(axis_size=D)
def create_counters(rngs: nnx.Rngs):
    return Counter(rngs)
