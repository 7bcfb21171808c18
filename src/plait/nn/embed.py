"""``Embed``: a table of learned vectors, looked up by integer index."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from .. import initializers
from ..errors import LayerError
from ..module import Module
from ..rngs import Rngs
from ..variables import Param
from .linear import check_rngs, keep_arguments, promote_dtype

__all__ = ["Embed"]

default_embed_init = initializers.variance_scaling(1.0, "fan_in", "normal", out_axis=0)


class Embed(Module):
    """A lookup table: ``embed(ids)`` is ``embedding[ids]``, one row of ``features`` per id.

    ``embedding`` has shape ``(num_embeddings, features)``. The lookup keeps the table's
    dtype (``dtype`` if given, else ``param_dtype``); an id outside
    ``[-num_embeddings, num_embeddings)`` gives a row of NaN rather than an error, since
    the ids are usually traced. ``attend(query)`` goes the other way, scoring a vector
    against every row (``query @ embedding.T``): the usual tied output layer of a
    language model.

    Example:
        >>> import jax.numpy as jnp, plait as nnx
        >>> embed = nnx.Embed(10, 4, rngs=nnx.Rngs(0))
        >>> ids = jnp.array([[1, 2, 3]])
        >>> vectors = embed(ids)
        >>> vectors.shape, embed.attend(vectors).shape
        ((1, 3, 4), (1, 3, 10))
        >>> bool((vectors[0, 0] == embed.embedding.value[1]).all())
        True
    """

    def __init__(
        self,
        num_embeddings: int,
        features: int,
        *,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
        embedding_init: Any = default_embed_init,
        rngs: Rngs,
    ) -> None:
        check_rngs(rngs, "Embed", "nnx.Embed(num_embeddings, features, rngs=nnx.Rngs(0))")
        self.embedding = Param(embedding_init(rngs.params(), (num_embeddings, features), param_dtype))
        keep_arguments(self, locals(), "embedding_init")

    def __call__(self, inputs: jax.Array) -> jax.Array:
        """Look up the rows ``inputs`` (integers of any shape): output ``inputs.shape + (features,)``."""
        dtype = jnp.result_type(inputs)
        if not jnp.issubdtype(dtype, jnp.integer):
            raise LayerError(
                f"Embed({self.num_embeddings}, {self.features}) looks rows up by integer id, but got {dtype} input "
                f"of shape {tuple(jnp.shape(inputs))}.\n"
                "Cast the ids: embed(ids.astype(jnp.int32)); to score vectors against the table use embed.attend(x)."
            )
        embedding = self.embedding.value
        if self.dtype is not None:
            embedding = jnp.asarray(embedding, self.dtype)
        return jnp.take(embedding, inputs, axis=0)

    def attend(self, query: jax.Array) -> jax.Array:
        """Score ``query`` (last axis ``features``) against every row: ``query @ embedding.T``."""
        if jnp.shape(query)[-1:] != (self.features,):
            raise LayerError(
                f"Embed({self.num_embeddings}, {self.features}).attend got a query of shape "
                f"{tuple(jnp.shape(query))}: its last axis must be {self.features}"
            )
        query, embedding = promote_dtype(query, self.embedding.value, dtype=self.dtype)
        return jnp.dot(query, embedding.T)
