"""Files shared in Slack: fetching them with the bot token, and showing ingest progress.

The bot token is sent only to Slack's own hosts (or the configured API host, e.g. a local fake),
never to whatever URL a payload names. Slack answers a token without files:read with its HTML
sign-in page rather than an error status, so that is recognised and explained.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol
from urllib.parse import urlparse

import aiohttp

from engine.errors import ErrorCode, ParleyError
from engine.types import IngestProgress, IngestResult

log = logging.getLogger(__name__)

TRUSTED_FILE_DOMAINS = ("slack.com", "slack-gov.com", "slack-edge.com")
STAGES = {"reading": "Reading", "embedding": "Embedding", "storing": "Storing"}


class _Editable(Protocol):
    async def edit(self, handle: Any, text: str) -> None: ...


def shown_name(name: str) -> str:
    return f"`{name.replace('`', '')}`"


def ingested_text(result: IngestResult, shown: str) -> str:
    """"Indexed `report.pdf`: 42 pages, 97 chunks. Ask away." and its variants."""
    if result.duplicate:
        return f"{shown} is already indexed here (version {result.version}); nothing changed."
    pages = f"{result.pages} page{'s' if result.pages != 1 else ''}, " if result.pages else ""
    chunks = f"{result.chunks} chunk{'s' if result.chunks != 1 else ''}"
    version = f" (version {result.version}, replacing the earlier one)" if result.version > 1 else ""
    return f"Indexed {shown}{version}: {pages}{chunks}. Ask away."


class ProgressBoard:
    """Shows ingest progress in one message. The engine may report from a worker thread, so the
    callback only records the latest figures; a ticker on the loop edits at most once per interval."""

    def __init__(self, target: _Editable, handle: Any, shown: str, interval_s: float):
        self.target, self.handle, self.shown, self.interval_s = target, handle, shown, interval_s
        self.latest: IngestProgress | None = None
        self._displayed: IngestProgress | None = None

    def __call__(self, progress: IngestProgress) -> None:
        self.latest = progress  # a reference assignment: safe from any thread

    async def tick(self) -> None:
        while True:
            await asyncio.sleep(self.interval_s)
            p = self.latest
            if p is None or p == self._displayed:
                continue
            self._displayed = p
            stage = STAGES.get(p.stage, p.stage.capitalize())
            with contextlib.suppress(Exception):  # progress is best effort
                await self.target.edit(self.handle, f"_{stage} {self.shown}: {p.done}/{p.total} {p.unit}…_")


class FileFetcher:
    """Downloads a Slack file object's bytes, within the size limit."""

    def __init__(self, bot_token: str, api_url: str, max_file_mb: float):
        self._bot_token = bot_token
        self._api_host = (urlparse(api_url).hostname or "").lower()
        self.max_file_mb = max_file_mb
        self._session: aiohttp.ClientSession | None = None

    async def open(self) -> None:
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300, sock_read=60))

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    def trusted(self, url: str) -> bool:
        parsed = urlparse(url)
        host = (parsed.hostname or "").lower()
        if host and host == self._api_host:
            return True
        return parsed.scheme == "https" and any(host == d or host.endswith("." + d) for d in TRUSTED_FILE_DOMAINS)

    def check(self, file: dict, name: str) -> None:
        """Refuse before downloading what cannot or must not be fetched."""
        if file.get("mode") in ("tombstone", "hidden_by_limit") or file.get("is_external"):
            raise ParleyError(ErrorCode.FILE_UNREADABLE, f"{name} is not stored in Slack, so I can't read it.")
        size = int(file.get("size") or 0)
        if size > self.max_file_mb * 2**20:
            raise ParleyError(ErrorCode.FILE_TOO_LARGE,
                              f"{name} is {size / 2**20:.1f} MB; the limit is {self.max_file_mb:g} MB.")

    async def download(self, file: dict, name: str) -> bytes:
        url = file.get("url_private_download") or file.get("url_private") or ""
        if not url or not self.trusted(url):
            log.warning("file url refused", extra={"file": name, "host": urlparse(url).hostname})
            raise ParleyError(ErrorCode.FILE_UNREADABLE, f"I can't download {name} from where Slack says it is.")
        assert self._session is not None, "open() first"
        limit = int(self.max_file_mb * 2**20)
        try:
            async with self._session.get(url, headers={"Authorization": f"Bearer {self._bot_token}"}) as resp:
                if resp.status != 200:
                    raise ParleyError(ErrorCode.FILE_UNREADABLE,
                                      f"Slack refused the download of {name} (HTTP {resp.status}).")
                if resp.content_type == "text/html" and not name.lower().endswith((".html", ".htm")):
                    raise ParleyError(ErrorCode.FILE_UNREADABLE,
                                      f"Slack did not let me download {name}: the app needs the files:read scope.")
                data = bytearray()
                async for chunk in resp.content.iter_chunked(1 << 16):
                    data += chunk
                    if len(data) > limit:
                        raise ParleyError(ErrorCode.FILE_TOO_LARGE,
                                          f"{name} is over the {self.max_file_mb:g} MB limit.")
                return bytes(data)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise ParleyError(ErrorCode.FILE_UNREADABLE,
                              f"The download of {name} from Slack failed ({type(exc).__name__}).") from exc
