"""The portal's errors: a small tree, translated to HTTP problem details at one boundary
(``_app.py``) and to exit codes in the CLI."""

from __future__ import annotations

from mrv_core import FatalError


class PortalError(Exception):
    """Base of the portal's errors."""


class PortalConfigError(PortalError, FatalError):
    """The portal's configuration cannot be used: it cannot start."""


class ChainUnavailable(PortalError):
    """The chain node does not answer (or answers nonsense); the indexer waits and retries."""


class DatabaseUnavailable(PortalError):
    """The database does not answer; requests get 503, the indexer waits and retries."""


class ApiProblem(PortalError):
    """An error a request gets back as RFC 9457 problem details."""

    def __init__(self, status: int, title: str, detail: str, *, type_: str = "about:blank",
                 **extra: object) -> None:
        super().__init__(f"{status} {title}: {detail}")
        self.status = status
        self.title = title
        self.detail = detail
        self.type = type_
        self.extra = extra
