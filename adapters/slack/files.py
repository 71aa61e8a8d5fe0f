"""Files shared in Slack: fetching them with the bot token (the ingest flow: adapters.chat.ingest).

The bot token is sent only to Slack's own hosts (or the configured API host, e.g. a local fake),
never to whatever URL a payload names. Slack answers a token without files:read with its HTML
sign-in page rather than an error status, so that is recognised and explained.
"""
from __future__ import annotations

import asyncio
import logging
from urllib.parse import urlparse

import aiohttp

from adapters.chat.ingest import SharedFile, is_document
from engine.errors import ErrorCode, ParleyError, file_too_large

log = logging.getLogger(__name__)

TRUSTED_FILE_DOMAINS = ("slack.com", "slack-gov.com", "slack-edge.com")


def shared_name(file: dict) -> str:
    return file.get("name") or file.get("title") or file.get("id", "file")


def slack_document(file: dict) -> bool:
    """A file Parley can read, by its name and the type Slack detected (an image, an archive or a
    video is not, and is never downloaded)."""
    return is_document(shared_name(file), file.get("mimetype") or "")


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

    def shared(self, file: dict, files_info) -> SharedFile:
        """The chat layer's view of a Slack file object; `files_info` completes one that came
        without its download URL."""
        name = shared_name(file)

        def check() -> None:  # refuse before posting anything what cannot or must not be fetched
            if file.get("mode") in ("tombstone", "hidden_by_limit") or file.get("is_external"):
                raise ParleyError(ErrorCode.FILE_UNREADABLE, f"{name} is not stored in Slack, so I can't read it.")

        async def download() -> bytes:
            whole = file
            if not (file.get("url_private_download") or file.get("url_private")):
                whole = (await files_info(file=file["id"]))["file"]
            return await self.download(whole, name)

        return SharedFile(name=name, size=int(file.get("size") or 0), mime_type=file.get("mimetype", ""),
                          download=download, check=check)

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
                        raise file_too_large(name, len(data), self.max_file_mb)
                return bytes(data)
        except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
            raise ParleyError(ErrorCode.FILE_UNREADABLE,
                              f"The download of {name} from Slack failed ({type(exc).__name__}).") from exc
