"""`POST /v1/files` (multipart: `file`, optional `scope`, `purpose`), `GET /v1/files`
(`?scope=` one, else every scope the key may read), `DELETE /v1/files/{id}`: a scope's documents,
through the Engine's document commands (the same ingest, limits and authority as a shared file).

A file's id names its channel and name (`file-` and their URL-safe base64), never its
workspace: that is always the key's, so a key of another workspace cannot reach it by its id.
"""
from __future__ import annotations

import asyncio
import base64
import binascii

from aiohttp import web

from adapters.http_api.context import caller_of, engine_of
from adapters.http_api.errors import bad_request, not_found
from adapters.http_api.identity import Caller
from engine.types import DocumentInfo, FileUpload

PREFIX = "file-"


def file_id(channel: str, filename: str) -> str:
    return PREFIX + base64.urlsafe_b64encode(f"{channel}/{filename}".encode()).decode().rstrip("=")


def parse_id(value: str) -> tuple[str, str]:
    """(channel, filename) of an id; 404 for one Parley never made."""
    try:
        raw = value.removeprefix(PREFIX)
        channel, _, filename = base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode().partition("/")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise not_found("There is no file with that id.") from None
    if not value.startswith(PREFIX) or not channel or not filename:
        raise not_found("There is no file with that id.")
    return channel, filename


def described(d: DocumentInfo, channel: str) -> dict:
    return {"id": file_id(d.channel or channel, d.filename), "object": "file", "bytes": None,
            "created_at": int(d.uploaded_at), "filename": d.filename, "purpose": "assistants", "status": "processed",
            "parley": {"scope": f"channel:{d.channel or channel}", "version": d.version, "pages": d.pages,
                       "chunks": d.chunks, "uploader": d.uploader}}


def _channel(caller: Caller, scope: object) -> str:
    if scope is None:
        return caller.default_channel()
    channel, workspace_wide = caller.readable(scope, "scope")
    if workspace_wide:
        raise bad_request("Upload into one channel's scope: `channel:NAME`.", "scope")
    return channel


async def upload_file(request: web.Request) -> web.Response:
    engine = engine_of(request)
    caller = caller_of(request)
    if not request.content_type.startswith("multipart/"):
        raise bad_request("Upload the file as multipart/form-data (`file`, optional `scope`).")
    form = await request.post()
    upload = form.get("file")
    if not isinstance(upload, web.FileField) or not upload.filename:
        raise bad_request("The form needs a `file` part with a file name.", "file")
    channel = _channel(caller, form.get("scope"))
    data = await asyncio.to_thread(upload.file.read)
    result = await engine.ingest(FileUpload(where=caller.conversation(channel), user=caller.user,
                                            filename=upload.filename, data=data, mime_type=upload.content_type))
    return web.json_response({
        "id": file_id(channel, result.filename), "object": "file", "bytes": len(data), "created_at": 0,
        "filename": result.filename, "purpose": str(form.get("purpose") or "assistants"), "status": "processed",
        "parley": {"scope": f"channel:{channel}", "version": result.version, "pages": result.pages,
                   "chunks": result.chunks, "duplicate": result.duplicate}})


async def list_files(request: web.Request) -> web.Response:
    engine = engine_of(request)
    caller = caller_of(request)
    scope = request.query.get("scope")
    if scope is not None:
        channels = [_channel(caller, scope)]
    else:
        channels = [s.removeprefix("channel:") for s in caller.identity.scopes
                    if s.startswith("channel:") and s != "channel:*"]
    if scope is None and caller.identity.may_read("channel:*"):
        documents = [(d, d.channel) for d in await engine.workspace_documents(caller.conversation(caller.own_channel))]
    else:
        documents = [(d, c) for c in channels for d in await engine.list_documents(caller.conversation(c), False)]
    return web.json_response({"object": "list", "data": [described(d, c) for d, c in documents]})


async def delete_file(request: web.Request) -> web.Response:
    engine = engine_of(request)
    caller = caller_of(request)
    channel, filename = parse_id(request.match_info["file_id"])
    _channel(caller, f"channel:{channel}")
    await engine.delete_document(caller.conversation(channel), filename, caller.user)
    return web.json_response({"id": request.match_info["file_id"], "object": "file", "deleted": True})
