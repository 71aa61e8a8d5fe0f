"""What a handler finds on its request: the Engine, the config and the caller (the key's identity)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

from adapters.http_api.identity import Caller
from engine.config import Config

if TYPE_CHECKING:
    from engine.core import Engine

ENGINE = web.AppKey("engine", object)
CONFIG = web.AppKey("config", Config)
CALLER = web.RequestKey("caller", Caller)  # set by the server's authentication


def engine_of(request: web.Request) -> Engine:
    return request.app[ENGINE]


def config_of(request: web.Request) -> Config:
    return request.app[CONFIG]


def caller_of(request: web.Request) -> Caller:
    return request[CALLER]
