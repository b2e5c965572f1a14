"""One exception hierarchy for Spinlet.

Every error the API can answer with is a `SpinletError` subclass carrying a stable machine
`code` and an HTTP `status`; the HTTP layer maps them in one middleware. The class docstring is
the default message. Foreign errors (SQLAlchemy, the Docker SDK) are translated into these at the
boundary of the layer that sees them.
"""

from __future__ import annotations

from typing import Any, ClassVar


class SpinletError(Exception):
    """Something went wrong in Spinlet."""

    code: ClassVar[str] = "internal_error"
    status: ClassVar[int] = 500

    def __init__(self, message: str | None = None, **details: Any) -> None:
        self.message = message or (self.__doc__ or self.code).strip()
        self.details = details
        super().__init__(self.message)


class BadRequest(SpinletError):
    """The request is not valid."""

    code = "bad_request"
    status = 400


class ValidationFailed(BadRequest):
    """A field of the request is missing or has a wrong value."""

    code = "validation_error"


class InvalidPackage(BadRequest):
    """The package is not a valid zip archive of Python code."""

    code = "invalid_package"


class InvalidEntry(BadRequest):
    """The entry (`module.function`) is not in the package: no such module, or the module
    does not define the function."""

    code = "invalid_entry"


class InvalidRequirements(BadRequest):
    """A requirements line is not a named requirement (PEP 508, with `--hash` options only):
    options, URLs and paths never reach pip."""

    code = "invalid_requirements"


class ChecksumMismatch(BadRequest):
    """The package's md5sum does not match the one given."""

    code = "md5_mismatch"


class ImageNotFound(BadRequest):
    """The runtime image is not present and cannot be pulled."""

    code = "image_not_found"


class InvalidRuntime(BadRequest):
    """The image is not a runtime this node can run functions in: it failed the runtime check
    (`GET /health`, the protocol version, loading and running a tiny function). The body's
    `checks` lists each check with whether it passed and why."""

    code = "invalid_runtime"


class Unauthorized(SpinletError):
    """This server requires an API token: send it in the X-Auth-Token header."""

    code = "unauthorized"
    status = 401


class Forbidden(SpinletError):
    """The operation is not allowed."""

    code = "forbidden"
    status = 403


class NotFound(SpinletError):
    """The resource does not exist."""

    code = "not_found"
    status = 404


class Conflict(SpinletError):
    """The request conflicts with the current state of the resource."""

    code = "conflict"
    status = 409


class AlreadyExists(Conflict):
    """A resource with that name already exists."""

    code = "already_exists"


class FunctionNotReady(Conflict):
    """The function's dependency layer is being built (`building`) or failed to build
    (`error`): what was asked needs it ready."""

    code = "function_not_ready"


class RuntimeNotReady(Conflict):
    """The function's runtime is not built on this node yet: its image is being built (first
    use); nothing was run or recorded. Retry once it is `available`."""

    code = "runtime_not_ready"

    def __init__(self, message: str | None = None, *, retry_after: int = 30) -> None:
        super().__init__(message, retry_after=retry_after)


class NotBuildable(Conflict):
    """Only the runtimes shipped with Spinlet are built by a node; a registered image is
    built and loaded by whoever registered it."""

    code = "not_buildable"


class InUse(Conflict):
    """The resource is still in use."""

    code = "in_use"


class TooLarge(SpinletError):
    """The request is larger than allowed."""

    code = "too_large"
    status = 413


class TooManyRequests(SpinletError):
    """Too many executions at once; try again later."""

    code = "concurrency_limit"
    status = 429

    def __init__(self, message: str | None = None, *, retry_after: int = 1) -> None:
        super().__init__(message, retry_after=retry_after)


class WebhookRateLimited(TooManyRequests):
    """Too many webhook calls for this project; try again later."""

    code = "rate_limited"


class Unavailable(SpinletError):
    """The service cannot take this request right now."""

    code = "unavailable"
    status = 503


class StoreUnavailable(Unavailable):
    """The database cannot be reached right now; try again shortly."""

    code = "store_unavailable"

    def __init__(self, message: str | None = None, *, retry_after: int = 1) -> None:
        super().__init__(message, retry_after=retry_after)


class RuntimeBackendError(SpinletError):
    """The runtime backend failed (container engine unreachable, image missing, …)."""

    code = "runtime_backend_error"
    status = 503


class ImageMissing(RuntimeBackendError):
    """The runtime image is not present on this node."""

    def __init__(self, message: str | None = None, *, image: str) -> None:
        super().__init__(message, image=image)
        self.image = image


class IllegalTransition(SpinletError):
    """The execution or function cannot change to that status from the one it has (a bug,
    never a request's fault: the transitions are `domain.TRANSITIONS` and
    `domain.FUNCTION_TRANSITIONS`)."""

    code = "illegal_transition"


class InvalidSetting(SpinletError):
    """A setting (a `SPINLET_*` variable or a flag of `spinlet serve`) has a wrong value."""

    code = "invalid_setting"


class ExecutionIdTaken(Conflict):
    """An execution with this id already exists, made by another request: choose another id."""

    def __init__(self, execution_id: str) -> None:
        # The same answer whether the execution is the caller's or another project's: the
        # client learns that the id is taken, nothing of the execution that holds it.
        super().__init__(f"execution {execution_id} already exists with a different request")


class RuntimeProtocolMismatch(RuntimeBackendError):
    """The runtime speaks another version of the runtime protocol than this node."""

    code = "runtime_protocol_mismatch"

    def __init__(self, spoken: object, expected: int) -> None:
        said = "names no protocol version" if spoken is None else f"speaks protocol {spoken!r}"
        super().__init__(
            f"the runtime {said}, this node speaks protocol {expected}: rebuild the runtime "
            "image (spinlet runtimes build --rebuild) or run a node of the image's release",
            protocol=spoken,
            expected=expected,
        )


class LayerBuildFailed(SpinletError):
    """Resolving or storing a dependency layer failed; the message is what a user reads on the
    function (pip's own words, without credentials). Never an HTTP answer of its own."""

    code = "layer_build_failed"
    status = 500
