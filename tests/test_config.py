"""config.yaml is validated before anything loads, and errors name the key."""
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT
from engine.config import ConfigError, load_config, parse_config


def shipped() -> dict:
    return yaml.safe_load((ROOT / "config.yaml").read_text())


def test_shipped_config_is_valid():
    config = load_config(ROOT / "config.yaml")
    assert config.default_model == "smollm2-135m"
    assert config.model("smollm2-135m").source == "packaged"


@pytest.mark.parametrize("mutate, key", [
    (lambda d: d["models"][0]["generation"].update(top_p=1.5), "models[0].generation.top_p"),
    (lambda d: d["models"][0]["generation"].update(temperature=-1), "models[0].generation.temperature"),
    (lambda d: d["models"][0]["generation"].update(max_new_tokens=5000), "models[0].generation.max_new_tokens"),
    (lambda d: d["models"][0].update(dtype="int3"), "models[0].dtype"),
    (lambda d: d["models"][0].update(device="tpu"), "models[0].device"),
    (lambda d: d["models"][0].update(num_beams=4), "models[0].num_beams"),
    (lambda d: d.update(default_model="gpt-9"), "default_model"),
    (lambda d: d["sessions"].update(history_tokens="lots"), "sessions.history_tokens"),
    (lambda d: d.update(sesions={}), "sesions"),
    (lambda d: d.update(models=[]), "models"),
    (lambda d: d["models"].append(dict(d["models"][0])), "models[1].name"),
])
def test_invalid_config_names_the_key(mutate, key):
    data = shipped()
    mutate(data)
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert str(info.value).startswith(key + ":"), str(info.value)


def test_bot_refuses_invalid_config_before_loading(tmp_path):
    data = shipped()
    data["models"][0]["generation"]["top_k"] = -3
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    result = subprocess.run([sys.executable, str(ROOT / "bot.py"), "--config", str(path), "--console"],
                            input="hello\n", capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "models[0].generation.top_k" in result.stderr
    assert result.stdout == ""
