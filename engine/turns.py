"""A thread's turns, what compaction folded away, and the session that holds them.

Plain data shared by the session stores (engine/sessions.py, engine/redis_sessions.py) and the
prompt planner (engine/prompting.py). Turns and folds are stored as JSON, never pickled.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    from engine.types import ThreadMessage

# The summary line of older turns quotes the first words of the people's last few messages.
SUMMARY_WORDS_PER_TURN = 12
SUMMARY_MAX_TURNS = 6
DEFAULT_MAX_TURNS = 200  # turns a session stores before the oldest are folded (config: sessions.max_turns)


@dataclass(frozen=True)
class Turn:
    role: str  # "user" | "assistant"
    text: str
    user_id: str
    at: float
    user_name: str = ""  # the speaker's display name, shown to the model when several people talk
    message_id: str = ""  # the platform's id of the message (Slack ts, Discord snowflake), if known

    def as_dict(self) -> dict:
        data = {"role": self.role, "text": self.text, "user_id": self.user_id, "at": self.at}
        if self.user_name:
            data["user_name"] = self.user_name
        if self.message_id:
            data["message_id"] = self.message_id
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "Turn":
        return cls(str(data["role"]), str(data["text"]), str(data["user_id"]), float(data["at"]),
                   user_name=str(data.get("user_name", "")), message_id=str(data.get("message_id", "")))

    def to_json(self) -> str:
        return to_json(self.as_dict())

    @classmethod
    def from_json(cls, raw: str | bytes) -> "Turn":
        return cls.from_dict(json.loads(raw))


def to_json(data: object) -> str:
    """Compact JSON, as the stores keep it."""
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def json_dict(raw: str | bytes | None) -> dict:
    """A JSON object stored by to_json ({} for nothing stored)."""
    return dict(json.loads(raw)) if raw else {}


def _first_words(text: str) -> str:
    """Enough of a message for the summary line: one more word than it quotes, so it still knows
    whether to add "…"."""
    return " ".join(" ".join(text.split()).split(" ")[:SUMMARY_WORDS_PER_TURN + 1])


@dataclass(frozen=True)
class Folded:
    """The turns compaction took out of a session, kept as what the prompt's summary line needs:
    the summary line written from them (prompting.summarise_dropped) is the one the full history
    would have given."""

    turns: int = 0  # messages folded
    questions: int = 0  # the people's messages among them
    recent: tuple[Turn, ...] = ()  # the last SUMMARY_MAX_TURNS of those, cut to their first words
    speakers: tuple[str, ...] = ()  # up to two named speakers: enough to know several people talked

    def __bool__(self) -> bool:
        return self.turns > 0

    def fold(self, turns: Sequence[Turn]) -> "Folded":
        """This fold with `turns` (the oldest of what is left, oldest first) folded in too."""
        asked = [t for t in turns if t.role == "user"]
        recent = (*self.recent, *(Turn(t.role, _first_words(t.text), t.user_id, t.at, user_name=t.user_name)
                                  for t in asked[-SUMMARY_MAX_TURNS:]))
        speakers = list(self.speakers)
        for turn in asked:
            who = turn.user_id or turn.user_name
            if turn.user_name and who not in speakers and len(speakers) < 2:
                speakers.append(who)
        return Folded(self.turns + len(turns), self.questions + len(asked), recent[-SUMMARY_MAX_TURNS:],
                      tuple(speakers))

    def to_json(self) -> str:
        return to_json({"turns": self.turns, "questions": self.questions,
                        "recent": [t.as_dict() for t in self.recent], "speakers": list(self.speakers)})

    @classmethod
    def from_json(cls, raw: str | bytes | None) -> "Folded":
        if not raw:
            return NOTHING_FOLDED
        data = json.loads(raw)
        return cls(int(data.get("turns", 0)), int(data.get("questions", 0)),
                   tuple(Turn.from_dict(t) for t in data.get("recent", ())),
                   tuple(data.get("speakers", ())))


NOTHING_FOLDED = Folded()


@dataclass(frozen=True)
class Session:
    key: str
    turns: tuple[Turn, ...] = ()  # the stored turns, oldest first (at most sessions.max_turns after a write)
    created_at: float = field(default_factory=time.time)
    updated_at: float = field(default_factory=time.time)
    settings: dict = field(default_factory=dict)  # a thread keeps the settings it started with
    # Older turns folded by compaction (a session pickled before folds existed reads the default).
    folded: Folded = NOTHING_FOLDED


def missed_turns(turns: Sequence[Turn], earlier: Sequence[ThreadMessage], now: float) -> tuple[Turn, ...]:
    """The thread messages (oldest first) a session has not seen: all of them for a new session;
    for one that exists, the people's messages after the last one it holds (its own answers are
    in it already). Nothing when the session's messages are not among them (nowhere to place them)."""
    if turns:
        known = {t.message_id for t in turns if t.message_id}
        anchor = max((i for i, m in enumerate(earlier) if m.message_id in known), default=None)
        if anchor is None:
            return ()
        earlier = [m for m in earlier[anchor + 1:] if m.role == "user" and m.message_id not in known]
    return tuple(Turn(m.role, m.text, m.user_id, now, user_name=m.user_name, message_id=m.message_id)
                 for m in earlier if m.text.strip())
