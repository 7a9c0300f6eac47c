"""Why a service could not do what it was asked, in words for whoever asked.

Services raise these instead of a web framework's errors, so the same code answers the API,
the CLI and the tests; the API maps each kind to its status (404, 409, 422, 503) and adds its own
hints (which route lists what).
"""

from __future__ import annotations


class ServiceError(Exception):
    def __init__(self, message: str):
        super().__init__(message)
        self.message = message

    def __reduce__(self):
        # Rebuilt from its attributes, not from its constructor's arguments (subclasses take
        # others): the API's pool of processes (serving/offload.py) sends these back whole.
        return _rebuild, (type(self), self.message, self.__dict__)


def _rebuild(kind: type[ServiceError], message: str, state: dict) -> ServiceError:
    error = kind.__new__(kind)
    ServiceError.__init__(error, message)
    error.__dict__.update(state)
    return error


class NotFound(ServiceError):
    """Nothing to show: a prediction not made yet, a model version that does not exist."""


class UnknownSymbol(NotFound):
    """A symbol with neither bars nor a prediction; ``suggestion`` is a spelling that is known."""

    def __init__(self, symbol: str, suggestion: str | None = None):
        super().__init__(f"unknown symbol '{symbol}': no bars and no prediction")
        self.symbol = symbol
        self.suggestion = suggestion


class ModelNotFound(NotFound):
    """No registered model version answers to the alias or number asked for."""


class InvalidInput(ServiceError):
    """The caller's input cannot be used; ``field`` is where in it, e.g. ``("sequences", 0, "features")``."""

    def __init__(self, field: tuple[str | int, ...], message: str):
        super().__init__(message)
        self.field = field


class Conflict(ServiceError):
    """The request clashes with what exists, e.g. a name already taken."""


class Unavailable(ServiceError):
    """A store the answer depends on (model registry, feature store) cannot be read now."""
