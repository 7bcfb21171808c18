"""A griffe extension for the API reference: plait's docstrings head their doctests with
``Example:`` (singular), which griffe's Google parser reads as an admonition of plain
Markdown, so the ``>>>`` lines would render as prose. Renaming the heading to ``Examples:``
makes them an examples section, rendered as highlighted code. Sphinx roles
(``:class:`Rngs```) become inline code, which is how Markdown shows them best."""

import re
from typing import Any

import griffe

_EXAMPLE_HEADING = re.compile(r"^(\s*)Example:\s*$", re.M)
_SPHINX_ROLE = re.compile(r":(?:py:)?(?:class|meth|func|attr|mod|obj|exc|data):`~?([^`]+)`")


class ExampleSections(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            text = _EXAMPLE_HEADING.sub(r"\1Examples:", obj.docstring.value)
            obj.docstring.value = _SPHINX_ROLE.sub(r"`\1`", text)
