"""The base error type that marks an error fatal."""

from __future__ import annotations


class FatalError(Exception):
    """An error that restarting cannot fix: the supervisor stops the task that raised it (and
    sets its state to ``alarm``) instead of restarting it; an operator must act. Subclass it
    (alongside a package's own base error) for such errors, e.g. ``AnchorConflict``."""
