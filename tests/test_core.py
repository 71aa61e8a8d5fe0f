"""The core loop through the real packaged model: answers, threads, persistence, limits, switching."""
from __future__ import annotations

import asyncio
import io

import pytest

from conftest import collect, make_config, spy_prompts
from engine.errors import ErrorCode
from engine.prompting import plan_prompt
from engine.sessions import Turn
from engine.types import AnswerDone, AnswerFailed, ChatRequest, Conversation, TextDelta, User

ALICE = User(id="U1", name="alice")
ADMIN = User(id="console")
THREAD = Conversation("console", "local", "console", "t1")


def ask(text: str, where: Conversation = THREAD, user: User = ALICE) -> ChatRequest:
    return ChatRequest(where=where, user=user, text=text)


async def test_capital_of_france(engine_factory, core_config):
    engine = await engine_factory(core_config)
    text, final, events = await collect(engine, ask("What is the capital of France?"))
    assert isinstance(final, AnswerDone), final
    assert "Paris" in final.text
    assert text.strip() == final.text  # the streamed deltas add up to the answer
    assert sum(isinstance(e, TextDelta) for e in events) > 1  # it streamed, not one block


async def test_second_question_sees_first_turn(engine_factory, core_config):
    engine = await engine_factory(core_config)
    prompts = spy_prompts(engine)
    _, first, _ = await collect(engine, ask("My favourite colour is teal. Say hello."))
    await collect(engine, ask("What is my favourite colour?"))
    history = prompts[1]
    assert [m["role"] for m in history] == ["system", "user", "assistant", "user"]
    assert "teal" in history[1]["content"]
    assert history[2]["content"] == first.text
    # Another thread does not see it.
    other = Conversation("console", "local", "console", "t2")
    await collect(engine, ask("What is my favourite colour?", where=other))
    assert all("teal" not in m["content"] for m in prompts[2])


async def test_restart_continues_the_thread(engine_factory, core_config):
    first_engine = await engine_factory(core_config)
    _, first, _ = await collect(first_engine, ask("Remember the code word: pineapple."))
    await first_engine.stop()

    second_engine = await engine_factory(core_config)  # same data dir
    prompts = spy_prompts(second_engine)
    await collect(second_engine, ask("What was the code word?"))
    assert "pineapple" in prompts[0][1]["content"]
    assert prompts[0][2]["content"] == first.text


def test_long_history_is_trimmed_and_summarised(loaded_model):
    count = loaded_model.count_tokens
    history = []
    for i in range(60):
        history.append(Turn("user", f"Question number {i}: tell me about topic {i} in detail please.", "U1", i))
        history.append(Turn("assistant", "Here is a long answer. " * 20, "", i))
    plan = plan_prompt(system_prompt="You are Parley.", history=history, message="And now?",
                       count_tokens=count, history_budget=400, context_window=2048, max_new_tokens=256)
    assert plan.history_dropped > 0 and plan.history_kept > 0
    assert plan.history_dropped + plan.history_kept == len(history)
    system = plan.messages[0]["content"]
    assert "older messages not shown" in system and "Question number" in system
    assert plan.messages[1]["role"] == "user"  # kept history starts with a user turn
    assert plan.messages[-2]["content"] == history[-1].text  # newest turns kept
    ids = loaded_model.chat_prompt_ids(plan.messages)
    assert len(ids) + 256 <= 2048


def test_each_speaker_is_named_when_several_people_talk(loaded_model):
    count = loaded_model.count_tokens
    thread = [Turn("user", "The launch is on Tuesday.", "U1", 1.0, user_name="Ana"),
              Turn("user", "I thought it was Thursday?", "U2", 2.0, user_name="Ben"),
              Turn("assistant", "Noted.", "", 3.0)]
    plan = plan_prompt(system_prompt="You are Parley.", history=thread, message="Who said Tuesday?",
                       count_tokens=count, history_budget=400, context_window=2048, max_new_tokens=64,
                       speaker="Cleo", speaker_id="U3")
    assert [m["content"] for m in plan.messages[1:]] == [
        "Ana: The launch is on Tuesday.", "Ben: I thought it was Thursday?", "Noted.", "Cleo: Who said Tuesday?"]
    assert "speaker's name" in plan.messages[0]["content"]

    # One person alone talks as before: no names.
    alone = plan_prompt(system_prompt="You are Parley.", history=thread[:1], message="And?", count_tokens=count,
                        history_budget=400, context_window=2048, max_new_tokens=64, speaker="Ana", speaker_id="U1")
    assert [m["content"] for m in alone.messages[1:]] == ["The launch is on Tuesday.", "And?"]

    # What no longer fits is summarised with who said it.
    long = [Turn("user", f"Point {i} from me. " + "words " * 60, f"U{i % 3}", float(i), user_name=f"P{i % 3}")
            for i in range(12)]
    trimmed = plan_prompt(system_prompt="You are Parley.", history=long, message="Sum up?", count_tokens=count,
                          history_budget=300, context_window=2048, max_new_tokens=64, speaker="P0", speaker_id="U0")
    assert trimmed.history_dropped and 'people said' in trimmed.messages[0]["content"]
    assert 'P2: "Point' in trimmed.messages[0]["content"]


async def test_history_past_budget_never_overflows(engine_factory, tmp_path):
    config = make_config(tmp_path / "data", knowledge={"enabled": False},
                         sessions={"history_tokens": 300})
    engine = await engine_factory(config)
    long_turns = [Turn("user", f"Tell me fact {i}. " + "words " * 80, "U1", float(i)) for i in range(10)]
    for turn in long_turns:
        engine.sessions.append(THREAD.session_key, turn, Turn("assistant", "Noted. " * 40, "", turn.at))
    prompts = spy_prompts(engine)
    _, final, _ = await collect(engine, ask("Summarise what we discussed."))
    assert isinstance(final, AnswerDone)
    assert final.history_dropped > 0
    assert "older messages not shown" in prompts[0][0]["content"]
    assert final.prompt_tokens + final.completion_tokens <= 2048


async def test_message_past_context_window_is_refused(engine_factory, core_config):
    engine = await engine_factory(core_config)
    huge = "lorem ipsum dolor sit amet " * 800  # ~4000 tokens, window is 2048
    _, final, _ = await collect(engine, ask(huge))
    assert isinstance(final, AnswerFailed)
    assert final.code is ErrorCode.CONTEXT_TOO_LONG
    assert "context window" in final.message and final.reference
    # The engine is fine afterwards, and the refused message was not stored.
    _, after, _ = await collect(engine, ask("What is the capital of France?"))
    assert isinstance(after, AnswerDone) and "Paris" in after.text
    session = engine.sessions.get(THREAD.session_key)
    assert all(huge.strip() != t.text for t in session.turns)


async def test_non_admin_cannot_switch_model(engine_factory, core_config):
    engine = await engine_factory(core_config)
    from engine.errors import ParleyError

    with pytest.raises(ParleyError) as info:
        await engine.switch_model("smollm2-135m-b", THREAD, ALICE)
    assert info.value.code is ErrorCode.FORBIDDEN
    with pytest.raises(ParleyError) as info:
        await engine.switch_model("nope", THREAD, ADMIN)
    assert info.value.code is ErrorCode.MODEL_UNKNOWN
    assert engine.live_model == "smollm2-135m"


async def test_switch_during_an_answer_leaves_it_whole(engine_factory, tmp_path, exact_model):
    config = make_config(tmp_path / "data", knowledge={"enabled": False})
    config.models[0].generation.max_new_tokens = 120
    # transformers in float32, where a greedy answer does not depend on what else the runtime
    # holds (README, "Exactness"): the answer must be the reference, word for word.
    engine = await engine_factory(config, model_loader=lambda _cfg: exact_model)
    reference_text, reference, _ = await collect(
        engine, ask("Write a short story about a robot.", where=Conversation("console", "local", "c", "ref")))

    first_events = []

    async def first_answer():
        async for event in engine.answer(ask("Write a short story about a robot.")):
            first_events.append(event)

    task = asyncio.create_task(first_answer())
    while not any(isinstance(e, TextDelta) for e in first_events):
        await asyncio.sleep(0.01)
    info = await engine.switch_model("smollm2-135m-b", THREAD, ADMIN)  # mid-answer
    await task
    assert info.live and engine.live_model == "smollm2-135m-b"
    final = first_events[-1]
    assert isinstance(final, AnswerDone)
    # Whole: the same greedy answer as without the switch, or cleanly marked cancelled.
    assert final.text == reference.text or final.finish_reason == "cancelled"
    _, after, _ = await collect(engine, ask("What is the capital of France?",
                                            where=Conversation("console", "local", "c", "new")))
    assert isinstance(after, AnswerDone) and "Paris" in after.text
    models = {m.name: m.live for m in engine.list_models()}
    assert models == {"smollm2-135m": False, "smollm2-135m-b": True}


async def test_console_pipe_prints_answers_only(engine_factory, core_config):
    from adapters.console import ConsoleAdapter

    engine = await engine_factory(core_config)
    stdin = io.StringIO("What is the capital of France?\n/llm-stats\n")
    stdout = io.StringIO()
    await ConsoleAdapter(engine, stdin=stdin, stdout=stdout, interactive=False).run()
    lines = stdout.getvalue().splitlines()
    assert "Paris" in lines[0]
    assert any(line.startswith("Model smollm2-135m") for line in lines)
    assert any(line.startswith("Requests 1") for line in lines)


@pytest.mark.slow
def test_make_run_pipe(tmp_path):
    """The README's promise: a question piped into the bot prints an answer with Paris."""
    import subprocess
    import sys

    import yaml

    from conftest import ROOT

    data = yaml.safe_load((ROOT / "config.yaml").read_text())
    data["data_dir"] = str(tmp_path / "data")
    data["models"][0]["generation"]["temperature"] = 0.0
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    result = subprocess.run([sys.executable, str(ROOT / "bot.py"), "--config", str(path)],
                            input="What is the capital of France?\n", capture_output=True, text=True,
                            timeout=300, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Paris" in result.stdout
    assert "INFO" not in result.stdout  # logs go to stderr
