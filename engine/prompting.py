"""Turning a thread's history and a new message into a prompt that fits the context window.

The newest turns that fit the history budget are kept verbatim; older ones are folded into one
short summary line, so the model still knows what the thread was about without overflowing.
When more than one person speaks in a thread, each of their messages begins with the speaker's
display name ("Ana: what about Tuesday?") so the model can tell them apart.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from engine.errors import ErrorCode, ParleyError
from engine.sessions import Turn

# Tokens the chat template adds around each message (<|im_start|>role\n ... <|im_end|>\n).
MESSAGE_OVERHEAD = 6
# The smallest answer worth generating: a prompt leaving less room than this is refused.
MIN_ANSWER_TOKENS = 32
SUMMARY_WORDS_PER_TURN = 12
SUMMARY_MAX_TURNS = 6
SPEAKER_NAME_CHARS = 40
SPEAKERS_NOTE = "Several people talk in this thread; each of their messages begins with the speaker's name."


@dataclass(frozen=True)
class PromptPlan:
    messages: list[dict]
    history_kept: int
    history_dropped: int


def speaker_label(name: str) -> str:
    """A display name made safe to start a message with: one line, no colon, not too long."""
    label = " ".join(name.replace(":", " ").split())
    return label[:SPEAKER_NAME_CHARS].strip()


def several_speakers(history: Sequence[Turn], speaker_id: str) -> bool:
    """More than one person (with a known name) speaks in the thread."""
    ids = {t.user_id or t.user_name for t in history if t.role == "user" and t.user_name}
    return len(ids | ({speaker_id} if speaker_id else set())) > 1


def labelled(turn: Turn, with_names: bool) -> str:
    """A turn's text as the model sees it: a person's message after their name when names are on."""
    if with_names and turn.role == "user" and speaker_label(turn.user_name):
        return f"{speaker_label(turn.user_name)}: {turn.text}"
    return turn.text


def summarise_dropped(turns: Sequence[Turn], with_names: bool = False) -> str:
    """One line naming what the dropped part of the thread asked about (extractive, no model call)."""
    questions = [t for t in turns if t.role == "user"]
    shown = []
    for turn in questions[-SUMMARY_MAX_TURNS:]:
        words = " ".join(turn.text.split()).split(" ")
        quoted = " ".join(words[:SUMMARY_WORDS_PER_TURN]) + ("…" if len(words) > SUMMARY_WORDS_PER_TURN else "")
        name = speaker_label(turn.user_name) if with_names else ""
        shown.append(f'{name}: "{quoted}"' if name else f'"{quoted}"')
    more = len(questions) - len(shown)
    topics = "; ".join(shown) + (f"; and {more} more" if more > 0 else "")
    who = "people said" if with_names else "the user asked"
    return f"Earlier in this thread ({len(turns)} older messages not shown), {who}: {topics}."


def plan_prompt(
    *,
    system_prompt: str,
    history: Sequence[Turn],
    message: str,
    count_tokens: Callable[[str], int],
    history_budget: int,
    context_window: int,
    max_new_tokens: int,
    context_block: str = "",
    speaker: str = "",
    speaker_id: str = "",
) -> PromptPlan:
    """Choose the messages for a prompt; `speaker` (display name) and `speaker_id` say who sent
    `message`.

    Raises CONTEXT_TOO_LONG when the new message (with the system prompt and any retrieved
    context) leaves less than MIN_ANSWER_TOKENS of the window for the answer.
    """
    system = system_prompt.strip()
    with_names = several_speakers(history, speaker_id or speaker)
    if with_names:
        system = f"{system}\n\n{SPEAKERS_NOTE}"
        message = labelled(Turn("user", message, speaker_id, 0.0, user_name=speaker), True)
    if context_block:
        system = f"{system}\n\n{context_block}"
    fixed = count_tokens(system) + count_tokens(message) + 3 * MESSAGE_OVERHEAD
    room_for_answer = min(max_new_tokens, max(MIN_ANSWER_TOKENS, context_window // 4))
    available = context_window - fixed - room_for_answer
    if context_window - fixed < MIN_ANSWER_TOKENS:
        raise ParleyError(
            ErrorCode.CONTEXT_TOO_LONG,
            f"That message is about {fixed} tokens; the model's context window is {context_window}. "
            "Please shorten it or split it up.",
        )
    budget = max(0, min(history_budget, available))
    texts = [labelled(t, with_names) for t in history]
    costs = [count_tokens(text) + MESSAGE_OVERHEAD for text in texts]

    start, summary = _keep_newest(history, costs, budget, count_tokens, with_names)
    if summary:
        system = f"{system}\n\n{summary}"
    kept = history[start:]
    messages = [{"role": "system", "content": system}]
    messages += [{"role": t.role, "content": text} for t, text in zip(kept, texts[start:])]
    messages.append({"role": "user", "content": message})
    return PromptPlan(messages=messages, history_kept=len(kept), history_dropped=start)


def _keep_newest(history: Sequence[Turn], costs: list[int], budget: int, count_tokens: Callable[[str], int],
                 with_names: bool) -> tuple[int, str]:
    """Where the kept history starts (whole turns, beginning with a user turn) and the summary
    line of the turns before it ("" when none were dropped, or not even the summary fits)."""

    def next_user_turn(i: int) -> int:  # templates expect the kept history to start with a user turn
        while i < len(history) and history[i].role != "user":
            i += 1
        return i

    # Newest turns that fit the budget...
    start, used = len(history), 0
    while start > 0 and used + costs[start - 1] <= budget:
        start -= 1
        used += costs[start]
    start = next_user_turn(start)
    # ...then make room for the summary line of what was dropped, dropping more if needed.
    summary = ""
    while start > 0:
        summary = summarise_dropped(history[:start], with_names)
        if sum(costs[start:]) + count_tokens(summary) + MESSAGE_OVERHEAD <= budget:
            break
        if start == len(history):
            summary = ""  # not even the summary fits: the prompt goes without history
            break
        start = next_user_turn(start + 1)
    return start, summary
