"""The HTTP API's aiohttp server: authentication, a cap on each key's requests in flight, every
failure in OpenAI's shape, and the handlers of routes.py.

A client that disconnects cancels its handler (aiohttp's handler_cancellation), and with it the
generation it was streaming. Keys are read from the store at each request (a revoke is
immediate); a key never reaches a log line or a reply (only its identity's name does).
"""
from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from aiohttp import web

from adapters.http_api.context import CALLER, CONFIG, ENGINE
from adapters.http_api.errors import ApiError, api_error_response, failure_response, unauthorized
from adapters.http_api.identity import Caller
from adapters.http_api.routes import OPEN_ROUTES, ROUTES
from engine.api_keys import KeyStore
from engine.config import Config
from engine.errors import ErrorCode, ParleyError

if TYPE_CHECKING:
    from engine.core import Engine

log = logging.getLogger(__name__)


class InFlight:
    """Requests each key has running: past `most`, the next is refused (429) until one ends."""

    def __init__(self, most: int):
        self.most = most
        self._running: collections.Counter[str] = collections.Counter()

    @contextlib.contextmanager
    def hold(self, name: str) -> Iterator[None]:
        if self._running[name] >= self.most:
            raise ApiError(429, f"This key has {self.most} requests running; wait for one to finish.",
                           code="too_many_requests_in_flight", parley_code=ErrorCode.QUEUE_FULL.value, retry_after=1)
        self._running[name] += 1
        try:
            yield
        finally:
            self._running[name] -= 1
            if not self._running[name]:
                del self._running[name]


class ApiServer:
    def __init__(self, engine: Engine, config: Config, keys: KeyStore | None = None):
        self.engine = engine
        self.config = config
        self.keys = keys or KeyStore(config.data_path)
        self.in_flight = InFlight(config.http_api.max_in_flight)
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=int(self.config.http_api.max_body_mb * 2**20),
                              middlewares=[self._errors, self._authenticate])
        app[ENGINE] = self.engine
        app[CONFIG] = self.config
        for method, path, handler in (*OPEN_ROUTES, *ROUTES):
            app.router.add_route(method, path, handler)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.config.http_api.host, self.config.http_api.port)
        await site.start()
        log.info("http api listening", extra={"host": self.config.http_api.host, "port": self.config.http_api.port})

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @web.middleware
    async def _errors(self, request: web.Request, handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except ApiError as exc:
            log.warning("api request refused: %s", exc.message,
                        extra={"status": exc.status, "ref": exc.reference, "path": request.path})
            return api_error_response(exc)
        except ParleyError as exc:  # the Engine counted and logged it (its commands are `reported`)
            return failure_response(exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            code = "request_too_large" if exc.status == 413 else "not_found" if exc.status == 404 else "http_error"
            return api_error_response(ApiError(exc.status, exc.reason, code=code, parley_code=ErrorCode.INVALID_REQUEST.value))
        except (asyncio.CancelledError, ConnectionResetError):
            raise
        except Exception as exc:  # noqa: BLE001 - a reply with a reference, the traceback in the log
            error = ApiError(500, "Something went wrong on my side.", code="internal_error",
                             parley_code=ErrorCode.INTERNAL.value)
            log.error("api request failed", extra={"ref": error.reference, "path": request.path}, exc_info=exc)
            return api_error_response(error)

    @web.middleware
    async def _authenticate(self, request: web.Request, handler) -> web.StreamResponse:
        if not request.path.startswith("/v1/"):
            return await handler(request)
        scheme, _, key = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise unauthorized("Send your API key as `Authorization: Bearer KEY` (python bot.py keys create NAME).")
        identity = await asyncio.to_thread(self.keys.verify, key.strip())
        if identity is None:
            raise unauthorized("That API key is not valid (revoked, or never made here).")
        request[CALLER] = Caller(identity)
        with self.in_flight.hold(identity.name):
            return await handler(request)
