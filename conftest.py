"""pytest, for the doctests of ``src/plait``: a module whose examples need an optional package
that is missing is left out (plait's own tests skip the same way, with importorskip)."""

import importlib.util

collect_ignore = [] if importlib.util.find_spec("flax") else ["src/plait/bridge/linen.py"]
