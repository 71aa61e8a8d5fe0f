"""Chroma in client/server mode: `chroma run` started by the test, two engines (two bot processes)
sharing it through knowledge.chroma.mode http. The model is the OpenAI-compatible fake server, so
the test sees exactly which passages reach the prompt."""
from __future__ import annotations

import pytest

from conftest import collect, make_config
from engine.core import Engine
from engine.types import AnswerDone, ChatRequest, Conversation, FileUpload, User
from ops_servers import FakeOpenAI, chroma_server

pytestmark = pytest.mark.timeout(300)

ADA = User("U1", "ada")
CHANNEL = Conversation("slack", "T1", "C1", "1.0")
OTHER_CHANNEL = Conversation("slack", "T1", "C2", "2.0")
HANDBOOK = ("Parley office handbook.\n\nThe office coffee machine is descaled every Thursday by Marguerite. "
            "Visitors sign in at the front desk on the second floor.\n\nThe bike shed code is 4417.")


def config_for(data_dir, host: str, port: int, server: FakeOpenAI):
    model = {"name": "big", "source": "openai_compatible", "base_url": server.base_url, "api_model": "m",
             "context_window": 4096, "generation": {"temperature": 0.0, "max_new_tokens": 32}}
    return make_config(data_dir, models=[model], default_model="big",
                       knowledge={"enabled": True, "chroma": {"mode": "http", "host": host, "port": port}})


async def test_two_processes_share_a_chroma_server(tmp_path):
    server = await FakeOpenAI(reply="Marguerite descales it on Thursdays.").start()
    engines: list[Engine] = []
    try:
        with chroma_server(tmp_path / "chroma") as (host, port):
            first = Engine(config_for(tmp_path / "bot1", host, port, server))
            await first.start()
            engines.append(first)
            result = await first.ingest(FileUpload(where=CHANNEL, user=ADA, filename="handbook.txt",
                                                   data=HANDBOOK.encode(), mime_type="text/plain"))
            assert result.chunks >= 1 and not result.duplicate
            assert not (tmp_path / "bot1" / "chroma").exists()  # nothing embedded on local disk

            # A second bot process with its own data dir sees the same store through the server.
            second = Engine(config_for(tmp_path / "bot2", host, port, server))
            await second.start()
            engines.append(second)
            assert [d.filename for d in await second.list_documents(CHANNEL)] == ["handbook.txt"]
            assert await second.list_documents(OTHER_CHANNEL) == []  # scopes hold across processes

            text, final, _ = await collect(second, ChatRequest(
                where=CHANNEL, user=ADA, text="Who descales the coffee machine?"))
            assert isinstance(final, AnswerDone) and text == "Marguerite descales it on Thursdays."
            assert [s.file for s in final.sources] == ["handbook.txt"]
            prompt = " ".join(m["content"] for m in server.requests[-1]["messages"])
            assert "descaled every Thursday by Marguerite" in prompt  # the retrieved passage reached the model

            # Re-sharing from the other process is recognised as the same document.
            again = await second.ingest(FileUpload(where=CHANNEL, user=ADA, filename="handbook.txt",
                                                   data=HANDBOOK.encode(), mime_type="text/plain"))
            assert again.duplicate
            stats = (await first.stats()).values["knowledge"]
            assert stats["documents"] == 1 and stats["store"] == "http"
            assert await first.delete_document(CHANNEL, "handbook.txt", ADA) >= 1
            assert await second.list_documents(CHANNEL) == []
    finally:
        for engine in engines:
            await engine.stop()
        await server.stop()
