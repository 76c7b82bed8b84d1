"""The one exception hierarchy of dockwatch.

Adapters convert third-party errors at the boundary with ``raise OurError(...) from exc``.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error dockwatch raises on purpose."""


class ConfigError(GatewayError):
    """The configuration is invalid.

    ``problems`` holds one line per problem, each naming its key path.
    """

    def __init__(self, problems: list[str] | str) -> None:
        self.problems: list[str] = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems))


class DeviceError(GatewayError):
    """A reader or shelf misbehaved (connection, protocol, exception response)."""

    def __init__(self, device_id: str, message: str) -> None:
        self.device_id = device_id
        super().__init__(f"{device_id}: {message}")


class ProtocolError(GatewayError):
    """Bytes on the wire do not follow the protocol (malformed frame, absurd length...)."""


class StoreError(GatewayError):
    """The edge store cannot do what was asked (unreachable database, schema mismatch...)."""


class PublishError(GatewayError):
    """A sink (MQTT broker, central gRPC) refused or could not take a message."""
