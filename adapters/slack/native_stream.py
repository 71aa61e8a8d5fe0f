"""Slack's native answer streaming: chat.startStream, chat.appendStream, chat.stopStream.

Streamed messages do not spend the workspace's ~50 chat.update calls a minute, so eight answers
at once each grow several times a second instead of every few seconds. Where a workspace
answers chat.startStream with an error saying it cannot (an older Enterprise Grid, GovSlack, a
missing scope: UNSUPPORTED), that workspace gets today's chat.update streaming
(adapters.chat.streaming.StreamingReply) and the choice is remembered for as long as the process
runs: the first answer there probes, the others wait for its verdict, so one failed call at most.

The final message is the same text as the chat.update path shows (in Markdown, which Slack
renders, where that one writes mrkdwn), laid out over the same parts by split_message. Text is
only ever appended, so an answer is streamed into its current part only as far as the part's
final cut can never come before (the soft limit); a part is stopped once the text has grown past
it, and the next part continues in a new streamed message. The feedback buttons go on the last
message with chat.stopStream. Calls are made directly rather than through slack_sdk's
AsyncChatStream, which buffers by size (256 characters) where an answer needs a beat in time.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from adapters.chat.feedback import FeedbackTag
from adapters.chat.markup import Markup
from adapters.chat.streaming import FENCE, StreamingReply, split_message
from adapters.slack.feedback import feedback_blocks
from adapters.slack.markup import SLACK_MARKDOWN, guard

log = logging.getLogger(__name__)

# chat.startStream errors that mean "not in this workspace", as opposed to a passing failure.
UNSUPPORTED = {"unknown_method", "missing_scope", "not_allowed_token_type", "method_deprecated",
               "feature_not_enabled", "not_supported", "team_not_allowed", "enterprise_is_restricted",
               "invalid_arguments", "access_denied"}


class StreamSupport:
    """Per workspace: does chat.startStream work? Learnt from the first answer there, remembered."""

    def __init__(self) -> None:
        self.verdicts: dict[str, bool] = {}
        self._probes: dict[str, asyncio.Future] = {}

    async def acquire(self, workspace: str) -> bool | None:
        """True or False once known; None: the caller probes, and must call settle()."""
        while workspace not in self.verdicts:
            probe = self._probes.get(workspace)
            if probe is None:
                self._probes[workspace] = asyncio.get_running_loop().create_future()
                return None
            await asyncio.shield(probe)
        return self.verdicts[workspace]

    def settle(self, workspace: str, supported: bool | None) -> None:
        """The probe's verdict; None when it learnt nothing (the next answer probes again)."""
        if supported is not None:
            if not supported and workspace not in self.verdicts:
                log.warning("native streaming unavailable here: chat.update streaming from now on",
                            extra={"workspace": workspace})
            self.verdicts[workspace] = supported
        probe = self._probes.pop(workspace, None)
        if probe is not None and not probe.done():
            probe.set_result(None)


def _caps(limit: int, soft: int | None) -> int:
    """How far into a part text may be streamed: split_message never cuts a part before this."""
    soft_eff = int(limit * 0.75) if soft is None else max(1, min(soft, limit - 8))
    return min(soft_eff, limit - len(FENCE) - 2)


class NativeStreamingReply:
    """One answer streamed with Slack's stream methods, or (where the workspace cannot) by
    `fallback()`, a chat.update StreamingReply, which it then hands everything to."""

    def __init__(self, client: AsyncWebClient, channel: str, thread_ts: str, *, workspace: str, user_id: str,
                 support: StreamSupport, fallback: Callable[[], StreamingReply], interval_s: float, limit: int,
                 soft_limit: int | None = None, clock: Callable[[], float] = time.monotonic):
        self.client = client
        self.channel = channel
        self.thread_ts = thread_ts
        self.workspace = workspace
        self.user_id = user_id
        self.support = support
        self._make_fallback = fallback
        self.interval_s = interval_s
        self.limit = limit
        self.soft_limit = soft_limit
        self.clock = clock
        self.cap = _caps(limit, soft_limit)
        self.raw = ""
        self.native: bool | None = None  # None until the first words decide it
        self.fallback: StreamingReply | None = None
        self.streams: list[str] = []  # the ts of each streamed message, in order
        self.sent: list[str] = []  # what has been streamed into each
        self.stopped = 0  # streams stopped (settled parts)
        self.appends = 0
        self._last_flush = float("-inf")
        self._backoff_until = float("-inf")

    # ---- the Reply protocol (adapters.chat.answering) ----------------------------------------

    @property
    def opened(self) -> bool:
        return self.fallback.opened if self.fallback is not None else bool(self.streams)

    @property
    def messages(self) -> int:
        return self.fallback.messages if self.fallback is not None else len(self.streams)

    @property
    def edits(self) -> int:
        """chat.update calls: streamed messages grow by appends, which spend no edit budget."""
        return self.fallback.edits if self.fallback is not None else 0

    async def open(self, text: str) -> None:
        if self.fallback is not None:  # natively, the status indicator says "is thinking…"
            await self.fallback.open(text)

    async def status(self, text: str) -> None:
        if self.fallback is not None:
            await self.fallback.status(text)

    async def final_markup(self, markup: Markup) -> Markup:
        """Markdown when streaming natively, mrkdwn (`markup`) when editing: decided now if no
        words came."""
        if self.native is None and self.fallback is None:
            await self._decide("")
        return SLACK_MARKDOWN if self.native else markup

    async def append(self, delta: str) -> None:
        self.raw += delta
        if self.fallback is not None:
            await self.fallback.append(delta)
            return
        now = self.clock()
        if now - self._last_flush < self.interval_s or now < self._backoff_until or not self.raw.strip():
            return
        self._last_flush = now
        if self.native is None and not await self._decide(SLACK_MARKDOWN.render(self.raw)):
            return
        try:
            await self._stream(SLACK_MARKDOWN.render(self.raw.strip()), final=False)
        except SlackApiError as exc:  # an interim append is best effort: skip a beat
            retry_after = exc.response.headers.get("Retry-After") if exc.response is not None else None
            self._backoff_until = self.clock() + float(retry_after or self.interval_s * 2)
            log.warning("stream append failed; will retry at the next beat",
                        extra={"error": exc.response.get("error") if exc.response is not None else None})

    async def finish(self, final_text: str, feedback: FeedbackTag | None = None) -> None:
        if self.native is None and self.fallback is None:
            await self._decide(final_text)
        if self.fallback is not None:
            await self.fallback.finish(final_text, feedback=feedback)
            return
        await self._stream(SLACK_MARKDOWN.guard(final_text), final=True, feedback=feedback)

    async def replace(self, text: str) -> None:
        """Show `text` alone (a failure): streams are stopped, the first edited, the rest deleted."""
        if self.fallback is not None:
            await self.fallback.replace(text)
            return
        await self._stop_all()
        text = guard(text)  # a failure, in mrkdwn (`text`)
        if not self.streams:
            resp = await self.client.chat_postMessage(channel=self.channel, thread_ts=self.thread_ts, text=text)
            self.streams.append(resp["ts"])
            self.sent.append(text)
            return
        await self.client.chat_update(channel=self.channel, ts=self.streams[0], text=text, blocks=[])
        for ts in self.streams[1:]:
            await self.client.chat_delete(channel=self.channel, ts=ts)
        del self.streams[1:], self.sent[1:]

    async def discard(self) -> None:
        if self.fallback is not None:
            await self.fallback.discard()
            return
        await self._stop_all()
        for ts in self.streams:
            try:
                await self.client.chat_delete(channel=self.channel, ts=ts)
            except SlackApiError:
                log.warning("could not delete a streamed message", extra={"ts": ts})
        self.streams.clear()
        self.sent.clear()

    # ---- deciding ----------------------------------------------------------------------------

    async def _decide(self, first_text: str) -> bool:
        """Native or not, for this answer: by the workspace's verdict, or by probing with the
        first words. False hands the answer (its text so far included) to the fallback."""
        verdict = await self.support.acquire(self.workspace)
        if verdict:
            self.native = True
            return True
        if verdict is None:
            try:
                await self._start(self._first_cut(first_text.strip()))
                self.native = True
                self.support.settle(self.workspace, True)
                return True
            except SlackApiError as exc:
                error = exc.response.get("error") if exc.response is not None else None
                self.support.settle(self.workspace, False if error in UNSUPPORTED else None)
                log.info("chat.startStream refused: chat.update streaming for this answer",
                         extra={"workspace": self.workspace, "error": error})
        self.native = False
        self.fallback = self._make_fallback()
        if self.raw:
            await self.fallback.append(self.raw)
        return False

    # ---- streaming ---------------------------------------------------------------------------

    def _first_cut(self, text: str) -> str:
        parts = split_message(text, self.limit, self.soft_limit) if text else []
        return self._safe(parts[0], text) if parts else ""

    def _safe(self, part: str, text: str) -> str:
        """How much of an unsettled last part may be streamed: up to the cap, no trailing space,
        and not the closing fence split_message adds to a code block still being written."""
        if part.endswith("\n" + FENCE) and not text.endswith(FENCE):
            part = part[: -len(FENCE) - 1]
        return part if len(part) <= self.cap else part[: self.cap].rstrip()

    async def _stream(self, text: str, *, final: bool, feedback: FeedbackTag | None = None) -> None:
        """Bring the streamed messages up to `text`: settled parts completed and stopped, the
        current one appended to; `final` completes every part, the buttons on the last."""
        parts = split_message(text, self.limit, self.soft_limit) if text.strip() else []
        last = len(parts) - 1
        for i, part in enumerate(parts):
            if i < self.stopped:
                continue
            if i < last or final:
                await self._complete(i, part, feedback if final and i == last else None)
            else:
                await self._extend(i, self._safe(part, text))

    async def _extend(self, i: int, text: str) -> None:
        if i >= len(self.streams):
            if text:
                await self._start(text)
            return
        if text.startswith(self.sent[i]) and len(text) > len(self.sent[i]):
            await self.client.chat_appendStream(channel=self.channel, ts=self.streams[i],
                                                markdown_text=text[len(self.sent[i]):])
            self.sent[i] = text
            self.appends += 1

    async def _complete(self, i: int, text: str, feedback: FeedbackTag | None) -> None:
        """Stop part i showing exactly `text` (a new stream when it has none yet)."""
        if i >= len(self.streams):
            await self._start("")
        rest = ""
        repair = False
        if text.startswith(self.sent[i]):
            rest = text[len(self.sent[i]):]
        else:  # cannot happen by the layout's rules; never leave a wrong part behind
            log.warning("a streamed part differs from its final text: repaired with chat.update", extra={"part": i})
            repair = True
        blocks = feedback_blocks(feedback.answer_id) if feedback is not None else None
        await self.client.chat_stopStream(channel=self.channel, ts=self.streams[i], markdown_text=rest or None,
                                          blocks=blocks)
        self.sent[i] = text
        self.stopped = i + 1
        if repair:
            await self.client.chat_update(channel=self.channel, ts=self.streams[i], text=guard(text), blocks=blocks)

    async def _start(self, text: str) -> None:
        resp = await self.client.chat_startStream(
            channel=self.channel, thread_ts=self.thread_ts, markdown_text=text or None,
            recipient_team_id=self.workspace, recipient_user_id=self.user_id)
        self.streams.append(resp["ts"])
        self.sent.append(text)
        if text:
            self.appends += 1

    async def _stop_all(self) -> None:
        for i in range(self.stopped, len(self.streams)):
            try:
                await self.client.chat_stopStream(channel=self.channel, ts=self.streams[i])
            except SlackApiError:
                log.warning("could not stop a stream", extra={"ts": self.streams[i]})
        self.stopped = len(self.streams)

