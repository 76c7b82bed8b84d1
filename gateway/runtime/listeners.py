"""The local listeners: the gRPC API and the HTTP endpoint (metrics, probes, the console).

Building them applies every rule of the two listeners (the token, TLS files, no
unauthenticated listener off loopback), so :func:`preflight` builds them without serving.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, cast

from edge_store.repository import EdgeStore
from gateway.adapters.grpc_api import EdgeApiServer, RuntimeStatus
from gateway.adapters.metrics import MetricsServer, server_tls_context
from gateway.config import GatewayConfig, resolve_secret
from gateway.console.web import Console


def build_listeners(
    config: GatewayConfig,
    store: EdgeStore | None,
    *,
    environ: Mapping[str, str] | None = None,
    collect: Callable[[], Any] = dict,
    ready: Callable[[], str | None] | None = None,
    status: Callable[[], RuntimeStatus] | None = None,
    console: Console | None = None,
) -> tuple[EdgeApiServer, MetricsServer | None]:
    """The local gRPC API and the metrics endpoint ``config.api`` describes, not yet started.

    Building them applies every rule of the two listeners (the token, TLS files, no
    unauthenticated listener off loopback): :class:`ConfigError` otherwise. ``store`` None
    builds them only for that check (:func:`preflight`); they must not be started then.
    """
    api = config.api
    token = resolve_secret(api.token, environ=environ) if api.token else None
    server = EdgeApiServer.from_config(
        api,
        cast("EdgeStore", store),  # None only for preflight, which never serves
        site=config.site.id,
        token=token,
        status=status,
    )
    metrics = None
    if api.metrics_listen is not None:
        # One api.tls for both listeners: the metrics endpoint speaks HTTPS with the gRPC
        # API's certificate, and its client CA guards /metrics (not the probes' paths).
        tls = api.tls
        context = (
            server_tls_context(tls.cert_file, tls.key_file, tls.client_ca_file)
            if tls is not None
            else None
        )
        # /healthz is liveness (200 while the loop serves): starting, a store outage or a
        # part restarting are readiness matters (/readyz), not reasons to restart the process.
        # The operator console shares the listener, its TLS and its token (docs/console.md).
        metrics = MetricsServer(
            api.metrics_listen,
            collect,
            token,
            tls=context,
            ready=ready,
            **({} if console is None else console.listener_options()),
        )
    return server, metrics


def preflight(config: GatewayConfig, environ: Mapping[str, str] | None = None) -> None:
    """The start-up checks that need neither the store nor the network, as ``run`` applies
    them: secrets resolve, TLS files load, the listeners' authentication rules hold.
    ``dockwatch check-config`` runs them too. Raises :class:`ConfigError`."""
    build_listeners(config, None, environ=environ)


class Listeners:
    """The gRPC API and the HTTP listener of a running gateway, started and stopped together."""

    def __init__(self, api: EdgeApiServer, http: MetricsServer | None) -> None:
        self.api = api
        self.http = http

    async def start(self) -> None:
        """Bind the sockets (a port already taken fails start-up, not a task later on)."""
        await self.api.start()
        if self.http is not None:
            await self.http.start()

    def parts(self) -> list[tuple[str, Callable[[], Awaitable[None]]]]:
        """(name, run) of each listener, for the supervisor."""
        http = [] if self.http is None else [("metrics", self.http.run)]
        return [("grpc api", self.api.run), *http]

    async def stop(self) -> None:
        if self.http is not None:
            await self.http.stop()
        await self.api.stop()
