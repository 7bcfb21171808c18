"""What :func:`plait.migrate.migrate_source` reports: the result and the refused patterns."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Diagnostic", "Result", "Refuse"]

MARKER = "# plait.migrate:"


@dataclass(frozen=True)
class Diagnostic:
    """A pattern left unchanged: where (``path:line``), why, and the code to write by hand.

    Example:
        >>> from plait.migrate import Diagnostic
        >>> print(Diagnostic("m.py", 3, "vmap(): the axis size is unknown", "@nnx.split_rngs(splits=N)"))
        m.py:3: vmap(): the axis size is unknown
            convert by hand: @nnx.split_rngs(splits=N)
    """

    path: str
    line: int
    reason: str
    suggestion: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.reason}\n    convert by hand: {self.suggestion}"

    @property
    def comment(self) -> str:
        """The comment put above the pattern in the source."""
        return f"{MARKER} {self.reason}; convert by hand: {self.suggestion}"


@dataclass(frozen=True)
class Result:
    """The new ``code`` and the patterns left for hand conversion (``diagnostics``).

    Example:
        >>> from plait.migrate import Result
        >>> Result("x = 1\\n", ()).diagnostics
        ()
    """

    code: str
    diagnostics: tuple[Diagnostic, ...]


class Refuse(Exception):
    """Raised while planning: this site cannot be converted safely (``reason``, ``suggestion``)."""

    def __init__(self, reason: str, suggestion: str) -> None:
        super().__init__(reason)
        self.reason, self.suggestion = reason, suggestion
