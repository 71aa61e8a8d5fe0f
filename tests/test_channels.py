"""Channel settings: set by admins, viewed by all, persisted, applied per channel, kept per thread."""
from __future__ import annotations

import dataclasses

import pytest

from conftest import collect
from engine.errors import ErrorCode, ParleyError
from engine.types import AnswerDone, ChatRequest, Conversation, User

ADMIN = User(id="A1", name="admin", platform_admin=True)
MEMBER = User(id="U1", name="member")
# Public channels: the workspace scope reaches public channels' documents only (docs/security.md).
SUPPORT = Conversation("slack", "T1", "C-support", "1.0", visibility="public")
LEGAL = Conversation("slack", "T1", "C-legal", "2.0", visibility="public")
OTHER_WORKSPACE = Conversation("slack", "T2", "C-support", "3.0", visibility="public")


def in_thread(where: Conversation, thread: str) -> Conversation:
    return dataclasses.replace(where, thread=thread)


def spy_prompts(engine) -> list[list[dict]]:
    seen: list[list[dict]] = []
    backend = engine.lineup.live
    real = backend.encode_chat
    backend.encode_chat = lambda messages: (seen.append(messages), real(messages))[1]
    return seen


async def test_settings_round_trip_and_survive_restart(engine_factory, core_config):
    engine = await engine_factory(core_config)
    shown = await engine.configure(SUPPORT, ADMIN, "prompt You are the support desk. Be kind.")
    assert 'prompt: "You are the support desk. Be kind." (channel)' in shown
    await engine.configure(SUPPORT, ADMIN, "workspace length short")
    await engine.configure(SUPPORT, ADMIN, "reply all")
    await engine.stop()

    engine = await engine_factory(core_config)
    settings = await engine.channel_settings(SUPPORT)
    assert settings.prompt == "You are the support desk. Be kind."
    assert (settings.length, settings.origins["length"]) == ("short", "workspace")
    assert (settings.reply, settings.origins["reply"]) == ("all", "channel")
    # The workspace default reaches other channels of the workspace, not other workspaces.
    assert (await engine.channel_settings(LEGAL)).length == "short"
    assert (await engine.channel_settings(OTHER_WORKSPACE)).length == "medium"
    view = await engine.configure(SUPPORT, MEMBER, "")
    assert "length: short (workspace)" in view and "reply: all (channel)" in view
    await engine.configure(SUPPORT, ADMIN, "reset prompt")
    assert (await engine.channel_settings(SUPPORT)).origins["prompt"] == "default"


async def test_non_admin_can_view_but_not_set(engine_factory, core_config):
    engine = await engine_factory(core_config)
    for command in ("prompt Be rude.", "workspace scope workspace", "reset"):
        with pytest.raises(ParleyError) as info:
            await engine.configure(SUPPORT, MEMBER, command)
        assert info.value.code is ErrorCode.FORBIDDEN
    assert (await engine.channel_settings(SUPPORT)).origins["prompt"] == "default"
    with pytest.raises(ParleyError) as info:
        await engine.configure(SUPPORT, ADMIN, "length enormous")
    assert info.value.code is ErrorCode.INVALID_REQUEST and "short, medium, long" in info.value.user_message
    with pytest.raises(ParleyError) as info:
        await engine.configure(SUPPORT, ADMIN, "model gpt-9")
    assert info.value.code is ErrorCode.INVALID_REQUEST


async def test_channel_prompt_reaches_only_that_channel(engine_factory, core_config):
    engine = await engine_factory(core_config)
    await engine.configure(SUPPORT, ADMIN, "prompt You are Helpdesk Hal, the support desk bot.")
    prompts = spy_prompts(engine)
    await collect(engine, ChatRequest(SUPPORT, MEMBER, "Who are you?"))
    await collect(engine, ChatRequest(LEGAL, MEMBER, "Who are you?"))
    assert prompts[0][0]["content"].startswith("You are Helpdesk Hal")
    assert "Helpdesk Hal" not in prompts[1][0]["content"]


async def test_thread_keeps_the_settings_it_started_with(engine_factory, core_config):
    engine = await engine_factory(core_config)
    await engine.configure(SUPPORT, ADMIN, "prompt You are Version One.")
    prompts = spy_prompts(engine)
    await collect(engine, ChatRequest(SUPPORT, MEMBER, "Hello"))
    await engine.configure(SUPPORT, ADMIN, "prompt You are Version Two.")
    await collect(engine, ChatRequest(SUPPORT, MEMBER, "Hello again"))  # same thread
    await collect(engine, ChatRequest(in_thread(SUPPORT, "9.9"), MEMBER, "Hello"))  # a new thread
    assert prompts[1][0]["content"].startswith("You are Version One.")
    assert prompts[2][0]["content"].startswith("You are Version Two.")


async def test_short_answers_are_short(engine_factory, core_config):
    core_config.models[0].generation.max_new_tokens = 300
    engine = await engine_factory(core_config)
    await engine.configure(SUPPORT, ADMIN, "length short")
    _, final, _ = await collect(engine, ChatRequest(SUPPORT, MEMBER, "Write a long essay about the history of Rome."))
    assert isinstance(final, AnswerDone) and final.completion_tokens <= 96


async def test_stats_show_the_channel_settings(engine_factory, core_config):
    engine = await engine_factory(core_config)
    await engine.configure(SUPPORT, ADMIN, "scope workspace")
    report = (await engine.stats(SUPPORT)).render()
    assert "scope: workspace (channel)" in report
    assert "scope: channel (default)" in (await engine.stats(LEGAL)).render()


# ---- with documents (the real embedder and Chroma) -------------------------------------------

VACATION = "How many vacation days do staff get each year?"


async def documents_engine(engine_factory, tmp_path):
    import docgen
    from conftest import make_config
    from engine.types import FileUpload

    engine = await engine_factory(make_config(tmp_path / "data"))
    await engine.ingest(FileUpload(where=SUPPORT, user=MEMBER, filename="handbook.pdf", data=docgen.handbook_pdf()))
    return engine


@pytest.mark.slow
async def test_workspace_scope_reaches_other_channels_of_the_workspace_only(engine_factory, tmp_path, embedder):
    engine = await documents_engine(engine_factory, tmp_path)
    _, final, _ = await collect(engine, ChatRequest(LEGAL, MEMBER, VACATION))
    assert not final.sources, "channel scope: #legal does not see #support's handbook"

    await engine.configure(LEGAL, ADMIN, "scope workspace")
    _, final, _ = await collect(engine, ChatRequest(in_thread(LEGAL, "2.1"), MEMBER, VACATION))
    assert [s.label() for s in final.sources][:1] == ["handbook.pdf p.2"] and "27 days" in final.sources[0].excerpt

    await engine.configure(OTHER_WORKSPACE, ADMIN, "scope workspace")  # another workspace, just as wide
    _, final, _ = await collect(engine, ChatRequest(OTHER_WORKSPACE, MEMBER, VACATION))
    assert not final.sources, "workspace scope never crosses into another workspace"


@pytest.mark.slow
async def test_a_document_question_with_no_match_says_so(engine_factory, tmp_path, embedder):
    engine = await documents_engine(engine_factory, tmp_path)
    text, final, _ = await collect(engine, ChatRequest(in_thread(SUPPORT, "1.1"), MEMBER,
                                                       "What does the handbook say about parking fees for visitors?"))
    assert final.finish_reason == "not_found" and not final.sources
    assert "couldn't find anything about that in this channel's documents (handbook.pdf)" in text

    text, final, _ = await collect(engine, ChatRequest(LEGAL, MEMBER, "What does the report say about revenue?"))
    assert final.finish_reason == "not_found"
    assert "no documents in this channel yet" in text

    # A question that is not about documents is answered by the model as usual.
    _, final, _ = await collect(engine, ChatRequest(in_thread(SUPPORT, "1.2"), MEMBER, "What is the capital of France?"))
    assert final.finish_reason in ("stop", "length") and final.completion_tokens > 0
