"""The exception hierarchy: every error splitca raises on purpose, with no HTTP or exit codes."""

from __future__ import annotations


class SplitCAError(Exception):
    """Base for every error splitca raises on purpose."""


class ConfigError(SplitCAError):
    """The configuration (file, flag or environment) is invalid."""


class InvalidRequest(SplitCAError):
    """The input is malformed: not a CSR, bad JSON, bad name."""


class BodyTooLarge(InvalidRequest):
    """A request body is larger than the configured limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"Request body is larger than {limit} bytes.")
        self.limit = limit


class RequestTimeout(InvalidRequest):
    """A client did not finish sending its request (the body) in the allowed time."""


class MalformedRequestLine(InvalidRequest):
    """A request line that is not strictly ``method target HTTP/d.d``."""


class ServerBusy(SplitCAError):
    """The server cannot take this request now (it holds too much for other requests)."""


class UnsupportedMediaType(InvalidRequest):
    """A request body has a Content-Type the endpoint does not take."""


class NotAcceptable(InvalidRequest):
    """The client accepts no media type the endpoint can answer with."""


class NotFound(SplitCAError):
    """The named object (certificate, CSR, registration) does not exist."""


class Forbidden(SplitCAError):
    """The caller is not allowed to do this."""


class Conflict(SplitCAError):
    """The object exists but is in the wrong state for this operation."""


class PolicyViolation(SplitCAError):
    """A CSR is well formed but this CA refuses it.

    ``kind`` is one of puppetserver's CSR failure kinds: ``duplicate-cert``,
    ``hostname-mismatch``, ``invalid-subject-name``, ``disallowed-extension``,
    ``invalid-signature``, or splitca's own ``weak-key``, ``unsupported-key``,
    ``weak-signature`` and ``invalid-csr``.
    """

    def __init__(self, kind: str, certname: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.certname = certname


class LockTimeout(SplitCAError):
    """A cadir lock could not be taken in time."""


class StoreError(SplitCAError):
    """The cadir is missing, corrupt, or could not be written (for example a full disk)."""


class UnsafePath(StoreError):
    """A path splitca would write is a symbolic link: refused, never followed."""


class StoreUnavailable(StoreError):
    """The store cannot be reached now (database down, cadir gone): retry later."""


class NotDurable(StoreError):
    """A file was renamed into place (readers see it) but the rename could not be synced."""


class ListenError(SplitCAError):
    """The server cannot listen on its address and port (in use, not permitted, unknown host)."""


class RemoteError(SplitCAError):
    """A remote service (the CA, a registry) failed or answered something unusable."""


class ResponseTooLarge(RemoteError):
    """A remote answer was larger than the limit set for it."""


class CRLStale(SplitCAError):
    """The installed CRL is expired or close to its nextUpdate and no fresh one could be had."""


class MastersBehind(SplitCAError):
    """``splitca masters``: a compile master's CRL is behind the CA's by more than allowed."""


class ReloadFailed(SplitCAError):
    """A CRL was installed but the reload that makes the server load it failed or could not
    be confirmed (it stays pending)."""


class CRLRejected(SplitCAError):
    """A fetched CRL failed verification; ``check`` names the failed check."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check = check
