"""Files shared in Slack: fetching them with the bot token (progress display: adapters.streaming).

The bot token is sent only to Slack's own hosts (or the configured API host, e.g. a local fake),
never to whatever URL a payload names. Slack answers a token without files:read with its HTML
sign-in page rather than an error status, so that is recognised and explained.
"""
from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlparse

import aiohttp

from adapters.streaming import ProgressBoard, ingested_text, shown_name  # noqa: F401 - re-exported
from engine.errors import ErrorCode, ParleyError

log = logging.getLogger(__name__)

TRUSTED_FILE_DOMAINS = ("slack.com", "slack-gov.com", "slack-edge.com")


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
