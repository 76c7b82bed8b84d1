"""Requests the simulated reader refuses, and the LLRPStatus each refusal becomes.

Whoever checks a request (the session, the reader configuration, the ROSpec book, the select
filters) raises :class:`RequestRefused`; the session answers the request with its status and
changes nothing else, so a check must come before any change it guards.
"""

from __future__ import annotations

from gateway.llrp import codec as c


class RequestRefused(Exception):
    """A request the reader refuses; becomes the response's LLRPStatus."""

    def __init__(self, status: c.LLRPStatus) -> None:
        super().__init__(status.description)
        self.status = status


def field_error(code: int, description: str, field_num: int = 0) -> RequestRefused:
    """M_FieldError: a field of the message itself is wrong (``code``, e.g. A_Invalid)."""
    return RequestRefused(
        c.LLRPStatus(
            c.StatusCode.M_FIELD_ERROR, description, field_error=c.FieldError(field_num, code)
        )
    )


def param_error(
    param_type: int, description: str, code: int = c.StatusCode.P_FIELD_ERROR, field_num: int = 0
) -> RequestRefused:
    """M_ParameterError naming the parameter type; a P_FieldError also names the field
    (A_OutOfRange)."""
    field_err = (
        c.FieldError(field_num, c.StatusCode.A_OUT_OF_RANGE)
        if code == c.StatusCode.P_FIELD_ERROR
        else None
    )
    return RequestRefused(
        c.LLRPStatus(
            c.StatusCode.M_PARAMETER_ERROR,
            description,
            parameter_error=c.ParameterError(param_type, code, field_error=field_err),
        )
    )
