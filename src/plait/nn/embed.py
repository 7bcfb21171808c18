"""``Embed``: a table of learned vectors, looked up by integer index."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .. import initializers
from ..errors import LayerError
from ..module import Module
from ..rngs import Rngs
from ..variables import Param
from .linear import NO_METADATA, check_rngs, keep_arguments, promote_dtype

__all__ = ["Embed"]

default_embed_init = initializers.variance_scaling(1.0, "fan_in", "normal", out_axis=0)


class Embed(Module):
    """A lookup table: ``embed(ids)`` is ``embedding[ids]``, one row of ``features`` per id.

    ``embedding`` has shape ``(num_embeddings, features)``. The lookup keeps the table's
    dtype (``dtype`` if given, else ``param_dtype``). ``attend(query)`` goes the other
    way, scoring a vector against every row (``query @ embedding.T``): the usual tied
    output layer of a language model.

    Valid ids are ``0 <= id < num_embeddings``; a negative id is not an index from the end.
    What an invalid id does:

    - concrete ids (an eager call): a ``LayerError`` naming the layer, the valid range and
      the bad ids;
    - traced ids (inside ``jit``, ``vmap``, ``scan``, ...): their values are not known,
      so every invalid id, negative or too large, looks up a row of NaN (for an integer
      table, its dtype's most negative value). The reference gives NaN past the end but
      wraps negatives; here both follow one rule, which poisons the loss rather than
      training on a wrong row;
    - ``check_ids=True``: traced ids are checked when the computation runs (a
      ``jax.debug.callback``), so the call fails even under ``jit``. There JAX reports it
      as a ``JaxRuntimeError`` whose message holds the ``LayerError`` text. It costs a
      device-to-host copy of the ids per call.

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
        check_ids: bool = False,
        promote_dtype: Callable[..., Any] = promote_dtype,
        rngs: Rngs,
        embedding_metadata: Mapping[str, Any] = NO_METADATA,
    ) -> None:
        check_rngs(rngs, "Embed", "nnx.Embed(num_embeddings, features, rngs=nnx.Rngs(0))")
        self.embedding = Param(embedding_init(rngs.params(), (num_embeddings, features), param_dtype), **embedding_metadata)
        keep_arguments(self, locals(), "embedding_init", "embedding_metadata")

    def __call__(self, inputs: jax.Array) -> jax.Array:
        """Look up the rows ``inputs`` (integers of any shape): output ``inputs.shape + (features,)``."""
        dtype = jnp.result_type(inputs)
        if not jnp.issubdtype(dtype, jnp.integer):
            raise LayerError(
                f"Embed({self.num_embeddings}, {self.features}) looks rows up by integer id, but got {dtype} input "
                f"of shape {tuple(jnp.shape(inputs))}.\n"
                "Cast the ids: embed(ids.astype(jnp.int32)); to score vectors against the table use embed.attend(x)."
            )
        # The table keeps its dtype (an integer table stays integer), or takes `dtype`.
        (embedding,) = self.promote_dtype((self.embedding.value,), dtype=self.dtype, inexact=False)
        if isinstance(inputs, jax.core.Tracer):
            if self.check_ids:
                jax.debug.callback(self._check_ids, inputs)
        else:
            self._check_ids(inputs)
            inputs = jnp.asarray(inputs)
        # One rule for every invalid id under a trace: negatives are sent past the end, and
        # `fill` mode gives NaN there (jnp.take would otherwise wrap -1 to the last row).
        ids = jnp.where(inputs < 0, self.num_embeddings, inputs)
        return jnp.take(embedding, ids, axis=0, mode="fill")  # fills NaN for a float table

    def _check_ids(self, ids: Any) -> None:
        ids = np.asarray(ids)
        bad = (ids < 0) | (ids >= self.num_embeddings)
        if bad.any():
            shown = np.unique(ids[bad])
            more = f" (and {len(shown) - 10} more)" if len(shown) > 10 else ""
            fixes = []
            if (ids < 0).any():
                fixes.append("Negative ids are not counted from the end here: map them to a real id")
            if (ids >= self.num_embeddings).any():
                fixes.append(f"For ids up to {int(ids.max())} build nnx.Embed({int(ids.max()) + 1}, {self.features}, ...)")
            raise LayerError(
                f"Embed({self.num_embeddings}, {self.features}) got ids outside its table: valid ids are "
                f"0 <= id < {self.num_embeddings}, got {shown[:10].tolist()}{more} "
                f"at {int(bad.sum())} of {ids.size} positions.\n" + "; ".join(fixes) + "."
            )

    def attend(self, query: jax.Array) -> jax.Array:
        """Score ``query`` (last axis ``features``) against every row: ``query @ embedding.T``."""
        if jnp.shape(query)[-1:] != (self.features,):
            raise LayerError(
                f"Embed({self.num_embeddings}, {self.features}).attend got a query of shape "
                f"{tuple(jnp.shape(query))}: its last axis must be {self.features}"
            )
        query, embedding = self.promote_dtype((query, self.embedding.value), dtype=self.dtype)
        return jnp.dot(query, embedding.T)
