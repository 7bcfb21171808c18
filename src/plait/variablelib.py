"""``nnx.variablelib``: the reference's Variable module, as plait's Variable names.

Example:
    >>> import plait as nnx
    >>> nnx.variablelib.Variable is nnx.Variable, nnx.variablelib.Param is nnx.Param
    (True, True)
"""

from __future__ import annotations

from .array_refs import MutableArray, is_mutable_array, mutable_array
from .namespaces import missing
from .sharding_rules import use_eager_sharding, using_eager_sharding
from .variable_modes import VarDefaults, var_defaults
from .variable_names import register_variable_name, variable_name_from_type, variable_type_from_name
from .variables import (
    BatchStat,
    Cache,
    Intermediate,
    Param,
    Perturbation,
    RngCount,
    RngKey,
    RngState,
    Variable,
    VariableMetadata,
    VariableState,
    with_metadata,
)

#: 0.12's name of :func:`~plait.array_refs.is_mutable_array`.
is_array_ref = is_mutable_array

__all__ = [
    "BatchStat", "Cache", "Intermediate", "MutableArray", "Param", "Perturbation", "RngCount", "RngKey", "RngState",
    "VarDefaults", "Variable", "VariableMetadata", "VariableState", "is_array_ref", "is_mutable_array",
    "mutable_array", "register_variable_name", "use_eager_sharding", "using_eager_sharding", "var_defaults",
    "variable_name_from_type", "variable_type_from_name", "with_metadata",
]

__getattr__ = missing("variablelib", {
    name: "plait's Variables are plain Python cells (ref=True backs one by a JAX ref); there is no hijax Variable"
    for name in ("HijaxVariable", "HijaxVariableMeta", "AbstractVariable", "VariableQDD", "get_variable_p",
                 "new_variable_p", "set_variable_p", "variable_effect", "VariableEffect")
})
