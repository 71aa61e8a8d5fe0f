"""deploy/docker-compose.yml (docs/scaling.md) holds together without Docker: each replica's
command, run by sh as the container would, writes a config that Parley accepts, with its own
Discord shard and Redis, the Chroma server and the model server the compose file names; the
proxy's upstreams are the replicas' Slack ports; and the Chroma and model commands are the
ones the tests start as real processes."""
from __future__ import annotations

import re
import subprocess
from urllib.parse import urlsplit

import yaml

from conftest import ROOT
from engine.config import parse_config

DEPLOY = ROOT / "deploy"


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def replica_config(service: dict, tmp_path):
    """Run the replica's command's config step (sh, sed) as its container would, on this checkout."""
    script = service["command"][-1].split(" && ")[0].replace("/app/deploy/", f"{DEPLOY}/")
    script = script.replace("/tmp/parley.yaml", str(tmp_path / "parley.yaml")).replace("$$", "$")
    shard = service["environment"]["SHARD"]
    subprocess.run(["sh", "-c", script], check=True, env={"SHARD": shard, "PATH": "/usr/bin:/bin"})
    return parse_config(yaml.safe_load((tmp_path / "parley.yaml").read_text()))


def test_each_replica_gets_its_shard_and_the_shared_services(tmp_path):
    services = compose()["services"]
    replicas = sorted(name for name in services if name.startswith("parley-"))
    assert len(replicas) == 3
    chroma_port = services["chroma"]["command"][services["chroma"]["command"].index("--port") + 1]
    model_port = services["model"]["command"][services["model"]["command"].index("--port") + 1]
    for i, name in enumerate(replicas):
        service = services[name]
        config = replica_config(service, tmp_path)
        assert (config.discord.shard_count, config.discord.shard_ids) == (3, [i])  # one shard each
        assert config.sessions.backend == "redis" and config.limits.backend == "redis"
        assert urlsplit(service["environment"][config.sessions.redis_url_env]).hostname == "redis"
        assert (config.knowledge.chroma.mode, config.knowledge.chroma.host) == ("http", "chroma")
        assert str(config.knowledge.chroma.port) == chroma_port
        model = urlsplit(config.models[0].base_url)
        assert (config.models[0].source, model.hostname, str(model.port)) == ("openai_compatible", "model", model_port)
        assert config.slack.mode == "http" and service["restart"] == "unless-stopped"
    upstreams = re.findall(r"server (parley-\d):(\d+)", (DEPLOY / "nginx.conf").read_text())
    assert sorted(upstreams) == [(name, "3000") for name in replicas]
    assert services["chroma"]["command"][:2] == ["chroma", "run"]  # as tests/ops_servers.py starts it
    assert services["model"]["command"][:3] == ["python", "-m", "llama_cpp.server"]  # as test_remote_llama_server does
    assert set(compose()["volumes"]) >= {"redis-data", "chroma-data"}
