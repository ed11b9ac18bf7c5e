"""Where the operator commands find the API key and the services: the environment first, then
what `make up` wrote in .herald/ (found from any folder inside the checkout), then defaults."""

from __future__ import annotations

import json
from pathlib import Path

from devtools.up import write_env_file
from herald.ops.client import resolve_config

URLS = {"sender": "http://localhost:18004", "scheduler": "http://localhost:18002"}


def make_up(root: Path, key: str = "hk_from_make_up") -> Path:
    write_env_file(root / ".herald" / "env", {"HERALD_ENVIRONMENT": "development"}, key, URLS)
    inside = root / "services" / "sender"
    inside.mkdir(parents=True)
    return inside


def test_nothing_configured_means_no_key_and_the_default_ports(tmp_path: Path) -> None:
    config = resolve_config({}, tmp_path)
    assert config.api_key is None
    assert config.urls == {
        "ingest": "http://localhost:8001",
        "scheduler": "http://localhost:8002",
        "pipeline": "http://localhost:8003",
        "sender": "http://localhost:8004",
    }


def test_a_second_shell_inside_the_checkout_uses_what_make_up_wrote(tmp_path: Path) -> None:
    config = resolve_config({}, make_up(tmp_path))
    assert config.api_key == "hk_from_make_up"
    assert config.urls["sender"] == "http://localhost:18004"
    assert config.urls["scheduler"] == "http://localhost:18002"
    assert config.urls["ingest"] == "http://localhost:8001", "not written: the default"


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    environ = {"HERALD_API_KEY": "hk_env", "HERALD_SENDER_URL": "https://sender.example.com/"}
    config = resolve_config(environ, make_up(tmp_path))
    assert config.api_key == "hk_env" and config.key_source == "HERALD_API_KEY"
    assert config.urls["sender"] == "https://sender.example.com", "trailing slash dropped"
    assert config.urls["scheduler"] == "http://localhost:18002"


def test_the_readme_curl_variable_works_too_and_an_explicit_key_beats_everything(tmp_path: Path) -> None:
    inside = make_up(tmp_path)
    assert resolve_config({"HERALD_KEY": "hk_exported"}, inside).api_key == "hk_exported"
    explicit = resolve_config({"HERALD_API_KEY": "hk_env"}, inside, api_key="hk_flag")
    assert explicit.api_key == "hk_flag" and explicit.key_source == "--api-key"


def test_the_demo_tenant_file_is_the_last_resort(tmp_path: Path) -> None:
    (tmp_path / ".herald").mkdir()
    (tmp_path / ".herald" / "demo-tenant.json").write_text(json.dumps({"api_key": "hk_demo"}))
    assert resolve_config({}, tmp_path).api_key == "hk_demo"
    (tmp_path / ".herald" / "demo-tenant.json").write_text("not json")
    assert resolve_config({}, tmp_path).api_key is None
