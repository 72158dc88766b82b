"""The one HTTP server: `/metrics` (Prometheus exposition), `/healthz` (live), `/readyz` (ready).

It names no software or version (no `Server` header), and a client gets a bounded time to send its
request: aiohttp's keep-alive timer runs from the moment a connection opens and closes it if no
complete request arrived by then, so a client trickling its headers is cut off too.
"""

from __future__ import annotations

from aiohttp import hdrs, web
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from worker.health import Health, Verdict
from worker.settings import HttpSettings

# Seconds a connection may stay without a complete request (headers included), then it is closed.
REQUEST_READ_TIMEOUT_SECONDS = 10.0


def build_app(registry: CollectorRegistry, health: Health) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        return web.Response(body=encoder(registry), headers={"Content-Type": content_type})

    async def healthz(request: web.Request) -> web.Response:
        return _verdict(health.liveness())

    async def readyz(request: web.Request) -> web.Response:
        return _verdict(health.readiness())

    app = web.Application()
    app.on_response_prepare.append(_no_banner)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


async def _no_banner(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.popall(hdrs.SERVER, None)


def _verdict(verdict: Verdict) -> web.Response:
    return web.json_response(
        {"ok": verdict.ok, "detail": verdict.detail}, status=200 if verdict.ok else 503
    )


async def start_server(
    settings: HttpSettings,
    app: web.Application,
    read_timeout: float = REQUEST_READ_TIMEOUT_SECONDS,
) -> tuple[web.AppRunner, int]:
    """Start serving; returns the runner (for cleanup) and the bound port (0 picks a free one)."""
    runner = web.AppRunner(app, access_log=None, keepalive_timeout=read_timeout)
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port)
    await site.start()
    server = site._server
    sockets = getattr(server, "sockets", None) or []
    port = sockets[0].getsockname()[1] if sockets else settings.port
    return runner, int(port)
