"""`POST /v1/embeddings`: the packaged embedder's vectors (the one that indexes documents),
as floats or, as OpenAI's client asks by default, base64 of little-endian float32."""
from __future__ import annotations

import array
import base64
import sys

from aiohttp import web

from adapters.http_api.chat import read_json
from adapters.http_api.context import caller_of, engine_of
from adapters.http_api.errors import bad_request

EMBEDDING_MODEL = "all-MiniLM-L6-v2"


def _base64(vector: list[float]) -> str:
    packed = array.array("f", vector)
    if sys.byteorder != "little":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


async def embeddings(request: web.Request) -> web.Response:
    engine = engine_of(request)
    caller = caller_of(request)
    body = await read_json(request)
    given = body.get("input")
    texts = [given] if isinstance(given, str) else given
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise bad_request("`input` must be a string or a list of strings (token ids are not taken).", "input")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise bad_request("`encoding_format` is float or base64.", "encoding_format")
    vectors = await engine.api.embed(texts, caller.conversation(caller.own_channel), caller.user)
    tokens = engine.api.count_embedding_tokens(texts)
    return web.json_response({
        "object": "list", "model": EMBEDDING_MODEL,
        "data": [{"object": "embedding", "index": i,
                  "embedding": _base64(v) if encoding == "base64" else v} for i, v in enumerate(vectors)],
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens}})
