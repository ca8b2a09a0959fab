"""The project's errors: one hierarchy, each error's text is one clear paragraph for the user.

The CLI catches ``MaskclsError`` and prints ``error.message`` alone; anything else is a bug
and keeps its traceback. Service failures (MLflow, Prefect) are translated into
``TrackingError`` / ``OrchestrationError`` where the project talks to those services, so no
caller has to recognise a third-party exception. The builtin second bases keep the classes
catchable as they were before the hierarchy existed.
"""

from __future__ import annotations


class MaskclsError(Exception):
    """An error the user can act on; ``message`` says what failed, where, and what to do."""

    @property
    def message(self) -> str:
        """The paragraph shown to the user (the exception's text)."""
        return str(self)


class ConfigError(MaskclsError, ValueError):
    """A profile, an override or an environment setting that does not fit the configuration."""


class TrackingError(MaskclsError, RuntimeError):
    """MLflow cannot be used (unreachable, misconfigured, refused a request); says what and where."""


class OrchestrationError(MaskclsError, RuntimeError):
    """Prefect cannot be used (no server, no workers, no deployment, a refused request); says why."""
