"""Turning a thread's history and a new message into a prompt that fits the context window.

The newest turns that fit the history budget are kept verbatim; older ones are folded into one
short summary line, so the model still knows what the thread was about without overflowing. The
turns a session's compaction folded (turns.Folded) join that line as if they were still there.
Only the turns that may fit are tokenized, so planning costs the same for a long thread.
When more than one person speaks in a thread, each of their messages begins with the speaker's
display name ("Ana: what about Tuesday?") so the model can tell them apart.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from engine.errors import ErrorCode, ParleyError
from engine.turns import NOTHING_FOLDED, SUMMARY_MAX_TURNS, SUMMARY_WORDS_PER_TURN, Folded, Turn

# Tokens the chat template adds around each message (<|im_start|>role\n ... <|im_end|>\n).
MESSAGE_OVERHEAD = 6
# The smallest answer worth generating: a prompt leaving less room than this is refused.
MIN_ANSWER_TOKENS = 32
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


def several_speakers(history: Sequence[Turn], speaker_id: str, earlier: Folded = NOTHING_FOLDED) -> bool:
    """More than one person (with a known name) speaks in the thread (`earlier`: its folded turns)."""
    ids = {t.user_id or t.user_name for t in history if t.role == "user" and t.user_name}
    return len(ids | set(earlier.speakers) | ({speaker_id} if speaker_id else set())) > 1


def labelled(turn: Turn, with_names: bool) -> str:
    """A turn's text as the model sees it: a person's message after their name when names are on."""
    if with_names and turn.role == "user" and speaker_label(turn.user_name):
        return f"{speaker_label(turn.user_name)}: {turn.text}"
    return turn.text


def summarise_dropped(turns: Sequence[Turn], with_names: bool = False, earlier: Folded = NOTHING_FOLDED) -> str:
    """One line naming what the dropped part of the thread asked about (extractive, no model call);
    `earlier`, the turns folded out of the session before `turns`, count as dropped too."""
    asked = [t for t in turns if t.role == "user"]
    questions = [*earlier.recent, *asked[-SUMMARY_MAX_TURNS:]]
    shown = []
    for turn in questions[-SUMMARY_MAX_TURNS:]:
        words = " ".join(turn.text.split()).split(" ")
        quoted = " ".join(words[:SUMMARY_WORDS_PER_TURN]) + ("…" if len(words) > SUMMARY_WORDS_PER_TURN else "")
        name = speaker_label(turn.user_name) if with_names else ""
        shown.append(f'{name}: "{quoted}"' if name else f'"{quoted}"')
    more = earlier.questions + len(asked) - len(shown)
    topics = "; ".join(shown) + (f"; and {more} more" if more > 0 else "")
    who = "people said" if with_names else "the user asked"
    return f"Earlier in this thread ({earlier.turns + len(turns)} older messages not shown), {who}: {topics}."


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
    earlier: Folded = NOTHING_FOLDED,
    extra_tokens: int = 0,
) -> PromptPlan:
    """Choose the messages for a prompt; `speaker` (display name) and `speaker_id` say who sent
    `message`; `earlier` is what the session folded before `history` (history_dropped counts it);
    `extra_tokens`, what the message carries besides its text (a vision model's pictures).

    Raises CONTEXT_TOO_LONG when the new message (with the system prompt and any retrieved
    context) leaves less than MIN_ANSWER_TOKENS of the window for the answer.
    """
    system = system_prompt.strip()
    with_names = several_speakers(history, speaker_id or speaker, earlier)
    if with_names:
        system = f"{system}\n\n{SPEAKERS_NOTE}"
        message = labelled(Turn("user", message, speaker_id, 0.0, user_name=speaker), True)
    if context_block:
        system = f"{system}\n\n{context_block}"
    fixed = count_tokens(system) + count_tokens(message) + extra_tokens + 3 * MESSAGE_OVERHEAD
    room_for_answer = min(max_new_tokens, max(MIN_ANSWER_TOKENS, context_window // 4))
    available = context_window - fixed - room_for_answer
    if context_window - fixed < MIN_ANSWER_TOKENS:
        raise ParleyError(
            ErrorCode.CONTEXT_TOO_LONG,
            f"That message is about {fixed} tokens; the model's context window is {context_window}. "
            "Please shorten it or split it up.",
        )
    budget = max(0, min(history_budget, available))
    start, texts, summary = _keep_newest(history, budget, count_tokens, with_names, earlier)
    if summary:
        system = f"{system}\n\n{summary}"
    kept = history[start:]
    messages = [{"role": "system", "content": system}]
    messages += [{"role": t.role, "content": text} for t, text in zip(kept, texts)]
    messages.append({"role": "user", "content": message})
    return PromptPlan(messages=messages, history_kept=len(kept), history_dropped=earlier.turns + start)


def _keep_newest(history: Sequence[Turn], budget: int, count_tokens: Callable[[str], int], with_names: bool,
                 earlier: Folded) -> tuple[int, list[str], str]:
    """Where the kept history starts (whole turns, beginning with a user turn), the kept turns'
    texts, and the summary line of the turns before it and the folded ones ("" when none were
    dropped, or not even the summary fits). Only the newest turns that may fit are tokenized."""

    def next_user_turn(i: int) -> int:  # templates expect the kept history to start with a user turn
        while i < len(history) and history[i].role != "user":
            i += 1
        return i

    # Newest turns that fit the budget (newest_costs[0] is the last turn's)...
    newest_costs: list[int] = []
    start, used = len(history), 0
    while start > 0:
        cost = count_tokens(labelled(history[start - 1], with_names)) + MESSAGE_OVERHEAD
        if used + cost > budget:
            break
        newest_costs.append(cost)
        start -= 1
        used += cost
    start = next_user_turn(start)
    # ...then make room for the summary line of what was dropped, dropping more if needed.
    summary = ""
    while start > 0 or earlier:
        summary = summarise_dropped(history[:start], with_names, earlier)
        if sum(newest_costs[:len(history) - start]) + count_tokens(summary) + MESSAGE_OVERHEAD <= budget:
            break
        if start == len(history):
            summary = ""  # not even the summary fits: the prompt goes without history
            break
        start = next_user_turn(start + 1)
    return start, [labelled(t, with_names) for t in history[start:]], summary
