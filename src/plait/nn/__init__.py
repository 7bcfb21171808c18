"""Layers. Each file is one family; every public name is re-exported here and at ``plait.``."""

from importlib import import_module

_FAMILIES = (
    "linear",
    "dropout",
    "activations",
    "normalization",
    "embed",
    "conv",
    "pooling",
    "attention",
    "recurrent",
    "lora",
    "sequential",
)

__all__: list[str] = []
for _family in _FAMILIES:
    try:
        _module = import_module(f".{_family}", __name__)
    except ModuleNotFoundError as _e:  # a family not written yet
        if _e.name != f"{__name__}.{_family}":
            raise
        continue
    for _name in _module.__all__:
        globals()[_name] = getattr(_module, _name)
        __all__.append(_name)
