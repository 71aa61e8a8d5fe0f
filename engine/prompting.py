"""Turning a thread's history and a new message into a prompt that fits the context window.

The newest turns that fit the history budget are kept verbatim; older ones are folded into one
short summary line, so the model still knows what the thread was about without overflowing.
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


@dataclass(frozen=True)
class PromptPlan:
    messages: list[dict]
    history_kept: int
    history_dropped: int


def summarise_dropped(turns: Sequence[Turn]) -> str:
    """One line naming what the dropped part of the thread asked about (extractive, no model call)."""
    questions = [t.text for t in turns if t.role == "user"]
    shown = []
    for text in questions[-SUMMARY_MAX_TURNS:]:
        words = " ".join(text.split()).split(" ")
        shown.append(" ".join(words[:SUMMARY_WORDS_PER_TURN]) + ("…" if len(words) > SUMMARY_WORDS_PER_TURN else ""))
    more = len(questions) - len(shown)
    topics = "; ".join(f'"{s}"' for s in shown) + (f"; and {more} more" if more > 0 else "")
    return f"Earlier in this thread ({len(turns)} older messages not shown), the user asked: {topics}."


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
) -> PromptPlan:
    """Choose the messages for a prompt.

    Raises CONTEXT_TOO_LONG when the new message (with the system prompt and any retrieved
    context) leaves less than MIN_ANSWER_TOKENS of the window for the answer.
    """
    system = system_prompt.strip()
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
    costs = [count_tokens(t.text) + MESSAGE_OVERHEAD for t in history]

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
        summary = summarise_dropped(history[:start])
        if sum(costs[start:]) + count_tokens(summary) + MESSAGE_OVERHEAD <= budget:
            break
        if start == len(history):
            summary = ""  # not even the summary fits: the prompt goes without history
            break
        start = next_user_turn(start + 1)
    if summary:
        system = f"{system}\n\n{summary}"
    kept = history[start:]
    messages = [{"role": "system", "content": system}]
    messages += [{"role": t.role, "content": t.text} for t in kept]
    messages.append({"role": "user", "content": message})
    return PromptPlan(messages=messages, history_kept=len(kept), history_dropped=start)
