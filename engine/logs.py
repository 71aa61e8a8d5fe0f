"""Logging: stderr and a rotating file, plain or JSON, with secrets redacted from every record.

Structured context goes in `extra=` (`log.info("answered", extra={"session": ..., "tokens": 12})`);
plain lines append it as key=value, JSON lines carry it as fields. The redaction filter sits on
every handler, so records from any library (slack_sdk, aiohttp, discord.py) pass through it: the
values of the token/secret environment variables, Slack and Discord token shapes, Authorization
header values, credentials in URLs (user:password@, a token as the user, ?api_key= and the like)
and fields named like secrets never reach a log.
"""
from __future__ import annotations

import json
import logging
import logging.handlers
import os
import re
import time
from pathlib import Path

from engine.config import LoggingConfig

REDACTED = "[REDACTED]"
SECRET_ENV = ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "SLACK_SIGNING_SECRET", "DISCORD_TOKEN")
SECRET_ENV_SUFFIXES = ("_API_KEY", "_TOKEN", "_SECRET", "_PASSWORD")
SECRET_PATTERNS = (  # (pattern, what replaces it)
    (re.compile(r"xox[abposre]-[A-Za-z0-9-]+"), REDACTED),  # Slack bot/user/... tokens
    (re.compile(r"xapp-[A-Za-z0-9-]+"), REDACTED),  # Slack app-level tokens
    (re.compile(r"[MNO][A-Za-z0-9_-]{23,27}\.[A-Za-z0-9_-]{6}\.[A-Za-z0-9_-]{27,40}"), REDACTED),  # Discord bot token
    (re.compile(r"(?<=://)([^:/@\s]*):[^@/\s]+(?=@)"), rf"\1:{REDACTED}"),  # user:password@ (redis://:pw@host)
    (re.compile(r"(?<=://)[^:/@\s]{12,}(?=@)"), REDACTED),  # a token as the URL's user (https://TOKEN@host)
    (re.compile(r"(?i)([?&;](?:api[_-]?key|apikey|key|token|access[_-]?token|auth|secret|password|sig)=)[^&#\s'\"]+"),
     rf"\1{REDACTED}"),  # ?api_key=... in URLs
    (re.compile(r"(?i)(?<=bearer )[A-Za-z0-9._~+/=-]{8,}"), REDACTED),  # Authorization: Bearer ...
    (re.compile(r"(?i)(?<=\bbot )[A-Za-z0-9._-]{40,}"), REDACTED),  # Authorization: Bot ... (Discord)
    (re.compile(r"(?i)(?<=\bbasic )[A-Za-z0-9+/]{8,}={0,2}"), REDACTED),  # Authorization: Basic ...
)
# A field (extra=, or a key of a dict in one) named like this is a secret whatever its shape.
SECRET_KEY = re.compile(r"(?i)^(authorization|proxy-authorization|x-api-key|api[_-]?key|token|access[_-]?token|"
                        r"secret|client[_-]?secret|signing[_-]?secret|password|passwd|cookie|set-cookie)$")
MIN_SECRET_LEN = 6  # shorter env values would redact ordinary words

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}


def secret_values(environ: os._Environ | dict | None = None) -> list[str]:
    env = os.environ if environ is None else environ
    values = {v for k, v in env.items()
              if (k in SECRET_ENV or k.endswith(SECRET_ENV_SUFFIXES)) and len(v or "") >= MIN_SECRET_LEN}
    return sorted(values, key=len, reverse=True)  # longest first: a secret containing another


class Redactor:
    def __init__(self, secrets: list[str]):
        self.secrets = secrets

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, REDACTED)
        for pattern, replacement in SECRET_PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def field(self, key: object, value):
        """A named value: redacted by its shape, and whole when its name says it is a secret."""
        shown = self.value(value)
        if isinstance(key, str) and SECRET_KEY.match(key) and shown not in (None, "") \
                and REDACTED not in str(shown):
            return REDACTED
        return shown

    def value(self, value):
        if isinstance(value, str):
            return self(value)
        if isinstance(value, (int, float, bool)) or value is None:
            return value
        if isinstance(value, (list, tuple)):
            return type(value)(self.value(v) for v in value)
        if isinstance(value, dict):
            return {k: self.field(k, v) for k, v in value.items()}
        return self(str(value))


class RedactingFilter(logging.Filter):
    """Rewrites a record's message, extra fields and traceback with secrets replaced."""

    def __init__(self, redactor: Redactor):
        super().__init__()
        self.redact = redactor
        self._formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "_parley_redacted", False):
            return True  # every handler has this filter; one pass is enough
        try:
            record.msg = self.redact(record.getMessage())
            record.args = None
        except Exception:  # noqa: BLE001 - a bad format string is logging's problem, not a reason to leak
            record.msg = self.redact(str(record.msg))
            record.args = None
        for key, value in list(vars(record).items()):
            if key not in _STANDARD and not key.startswith("_"):
                setattr(record, key, self.redact.field(key, value))
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        record._parley_redacted = True
        return True


def extra_fields(record: logging.LogRecord) -> dict:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class PlainFormatter(logging.Formatter):
    def __init__(self):
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = extra_fields(record)
        if fields:
            tail = " ".join(f"{k}={json.dumps(v, default=str) if not isinstance(v, str) or ' ' in v else v}"
                            for k, v in fields.items())
            head, sep, rest = line.partition("\n")  # keep key=value on the first line, before a traceback
            line = f"{head} {tail}{sep}{rest}"
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
            **extra_fields(record),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, default=str, ensure_ascii=False)


# Libraries that are chatty at INFO; their warnings still come through.
QUIET = ("httpx", "httpcore", "urllib3", "chromadb", "sentence_transformers", "slack_bolt", "slack_sdk",
         "discord", "aiohttp.access", "transformers", "asyncio")


def setup_logging(config: LoggingConfig, data_dir: Path | str, *, environ: dict | None = None) -> list[logging.Handler]:
    """Configure the root logger (idempotent: replaces handlers it set before). Returns the handlers."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_parley", False):
            root.removeHandler(handler)
            handler.close()
    formatter = JsonFormatter() if config.format == "json" else PlainFormatter()
    redacting = RedactingFilter(Redactor(secret_values(environ)))
    handlers: list[logging.Handler] = [logging.StreamHandler()]  # stderr: stdout is the console's
    if config.file:
        path = Path(config.file)
        if not path.is_absolute():
            path = Path(data_dir) / path
        path.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.handlers.RotatingFileHandler(
            path, maxBytes=int(config.max_mb * 2**20), backupCount=config.backups, encoding="utf-8"))
    for handler in handlers:
        handler.setFormatter(formatter)
        handler.addFilter(redacting)
        handler._parley = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(config.level)
    for name in QUIET:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
    logging.captureWarnings(True)
    return handlers
