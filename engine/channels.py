"""Per-channel settings: a workspace-wide default and per-channel overrides, set by admins.

Settings: the system prompt (persona), the model, the knowledge scope (this channel or the whole
workspace), the answer length, and whether the bot answers every message, only mentions, or
nothing at all (`reply off`: Parley ignores the channel, admins' commands aside; engine/access.py).
Persisted with sqlitedict; a thread snapshots the settings it started with (see Engine).
"""
from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass, field

from engine.config import Config
from engine.errors import ErrorCode, ParleyError
from engine.redis_state import open_state_mapping, update_value
from engine.types import Conversation

LEVELS = ("channel", "workspace")
ANSWER_LENGTHS = {"short": 96, "medium": 256, "long": 640}  # max new tokens, clipped per model
REPLY_MODES = ("mentions", "all", "off")
ALIASES = {"mention": "mentions", "on": "mentions"}  # `/llm-config reply on` switches a channel back on
SETTING_HELP = {
    "prompt": "the system prompt (persona) for this channel",
    "model": "which configured model answers here",
    "scope": "knowledge scope: channel (this channel's documents) or workspace (all channels)",
    "length": "answer length: short, medium or long",
    "reply": "mentions (answer only when mentioned), all (answer every message) or off (ignore this channel; "
             "admins' commands still work)",
}


@dataclass(frozen=True)
class ChannelSettings:
    prompt: str
    model: str
    scope: str  # "channel" | "workspace"
    length: str  # "short" | "medium" | "long"
    reply: str  # "mentions" | "all" | "off"
    origins: dict = field(default_factory=dict)  # setting -> "default" | "workspace" | "channel"

    def as_dict(self) -> dict:
        return {k: getattr(self, k) for k in SETTING_HELP}

    def max_new_tokens(self, model_default: int, context_window: int) -> int:
        """short caps the model's default; long raises it (the prompt still has to fit)."""
        if self.length == "short":
            return min(ANSWER_LENGTHS["short"], model_default)
        if self.length == "long":
            return min(max(ANSWER_LENGTHS["long"], model_default), context_window // 2)
        return model_default

    def render(self) -> list[str]:
        lines = []
        for key in SETTING_HELP:
            value = getattr(self, key)
            if key == "prompt":
                value = " ".join(value.split())
                value = f'"{value[:120]}…"' if len(value) > 120 else f'"{value}"'
            lines.append(f"{key}: {value} ({self.origins.get(key, 'default')})")
        return lines


class ChannelSettingsStore:
    """Overrides keyed "platform/workspace" (workspace default) and "platform/workspace/channel",
    in any MutableMapping: a SqliteDict under data_dir, or Redis shared by several bot processes
    (each change a compare-and-set there: two processes changing one channel lose neither change)."""

    def __init__(self, config: Config, mapping: MutableMapping):
        self.config = config
        self._db = mapping

    @staticmethod
    def _key(where: Conversation, level: str) -> str:
        base = f"{where.platform}/{where.workspace}"
        return base if level == "workspace" else f"{base}/{where.channel}"

    def defaults(self, where: Conversation) -> dict:
        workspace_wide = where.workspace in self.config.knowledge.workspace_scope
        return {"prompt": self.config.system_prompt.strip(), "model": self.config.default_model,
                "scope": "workspace" if workspace_wide else "channel", "length": "medium", "reply": "mentions"}

    def effective(self, where: Conversation, live_model: str | None = None) -> ChannelSettings:
        values = self.defaults(where)
        if live_model:
            values["model"] = live_model  # /llm-model changes the default for every channel
        origins = {k: "default" for k in values}
        for level in ("workspace", "channel"):
            for key, value in self._db.get(self._key(where, level), {}).items():
                values[key] = value
                origins[key] = level
        return ChannelSettings(**values, origins=origins)

    def validate(self, key: str, value: str) -> str:
        value = value.strip()
        if key not in SETTING_HELP:
            raise ParleyError(ErrorCode.INVALID_REQUEST,
                              f"Unknown setting {key!r}. Settings: {', '.join(SETTING_HELP)}.")
        choices = {"scope": ("channel", "workspace"), "length": tuple(ANSWER_LENGTHS),
                   "reply": REPLY_MODES, "model": tuple(m.name for m in self.config.models)}
        if key in choices:
            value = value.lower() if key != "model" else value
            value = ALIASES.get(value, value) if key == "reply" else value
            if value not in choices[key]:
                raise ParleyError(ErrorCode.INVALID_REQUEST,
                                  f"{key} must be one of: {', '.join(choices[key])}.")
        if key == "prompt" and not value:
            raise ParleyError(ErrorCode.INVALID_REQUEST, "The prompt must not be empty (use reset).")
        if key == "prompt" and len(value) > 4000:
            raise ParleyError(ErrorCode.INVALID_REQUEST, "That prompt is too long (4000 characters at most).")
        return value

    def set(self, where: Conversation, level: str, key: str, value: str) -> None:
        value = self.validate(key, value)
        update_value(self._db, self._key(where, level), lambda stored: {**(stored or {}), key: value})

    def reset(self, where: Conversation, level: str, key: str | None) -> None:
        if key is not None and key not in SETTING_HELP:
            raise ParleyError(ErrorCode.INVALID_REQUEST,
                              f"Unknown setting {key!r}. Settings: {', '.join(SETTING_HELP)}.")

        def without(stored: dict | None) -> dict:
            return {} if key is None else {k: v for k, v in (stored or {}).items() if k != key}

        update_value(self._db, self._key(where, level), without)

    def close(self) -> None:
        close = getattr(self._db, "close", None)
        if close is not None:
            close()


def open_channel_settings(config: Config) -> ChannelSettingsStore:
    """Where config.sessions.backend keeps state: data_dir/settings.sqlite, or Redis (blocking: call it
    in a worker thread)."""
    return ChannelSettingsStore(config, open_state_mapping(config, "settings.sqlite", "channel_settings", "settings:"))


CONFIG_USAGE = """Usage: /llm-config                       show this channel's settings
       /llm-config KEY VALUE             set for this channel (admins)
       /llm-config workspace KEY VALUE   set the workspace default (admins)
       /llm-config reset [KEY]           back to the workspace default (admins)
       /llm-config workspace reset [KEY] back to the built-in default (admins)
Keys: """ + "; ".join(f"{k}: {v}" for k, v in SETTING_HELP.items())


@dataclass(frozen=True)
class ConfigCommand:
    level: str
    action: str  # "show" | "set" | "reset" | "help"
    key: str | None = None
    value: str = ""


def parse_config_command(text: str) -> ConfigCommand:
    """`/llm-config [workspace] [reset [KEY] | KEY VALUE | help]`."""
    words = text.strip().split(maxsplit=1)
    level = "channel"
    if words and words[0].lower() == "workspace":
        level = "workspace"
        words = words[1].split(maxsplit=1) if len(words) > 1 else []
    if not words:
        return ConfigCommand(level, "show")
    head = words[0].lower()
    rest = words[1] if len(words) > 1 else ""
    if head in ("help", "-h", "--help"):
        return ConfigCommand(level, "help")
    if head == "reset":
        return ConfigCommand(level, "reset", rest.strip().lower() or None)
    if not rest.strip():
        raise ParleyError(ErrorCode.INVALID_REQUEST, f"Give a value: /llm-config {head} VALUE.\n{CONFIG_USAGE}")
    return ConfigCommand(level, "set", head, rest)
