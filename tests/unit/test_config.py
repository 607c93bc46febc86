import pytest

from agent.config import AgentConfig, ConfigError, Readiness, load_file, merge_toml

FILE = """
[agent]
state_dir = "/tmp/pa-state"
plugin_index = "42"
[trace]
window_s = 30
[readiness."default/web/app"]
marker = "/tmp/ready"
[readiness."default/api/app"]
probe = ["wget", "-q", "http://127.0.0.1:8080/health"]
[inject]
snapshotter_socket = "/run/x.sock"
allowed_list_dirs = ["/srv/lists"]
"""


def test_file_values_are_applied(tmp_path):
    path = tmp_path / "agent.toml"
    path.write_text(FILE)
    config = load_file(path)
    assert config.state_dir == "/tmp/pa-state"
    assert config.plugin_index == "42"
    assert config.trace.window_s == 30.0
    assert config.readiness["default/web/app"] == Readiness(marker="/tmp/ready")
    assert config.readiness["default/api/app"].probe == ("wget", "-q", "http://127.0.0.1:8080/health")
    assert config.inject.snapshotter_socket == "/run/x.sock"
    assert [str(p) for p in config.allowed_list_dirs] == ["/srv/lists"]


def test_nri_config_overlays_file_config():
    base = merge_toml(AgentConfig(), FILE)
    merged = merge_toml(base, '[trace]\nwindow_s = 5\n[readiness."x/y/z"]\nmarker = "/r"\n')
    assert merged.trace.window_s == 5.0
    assert merged.state_dir == "/tmp/pa-state"
    assert set(merged.readiness) == {"default/web/app", "default/api/app", "x/y/z"}


def test_empty_nri_config_keeps_base():
    base = AgentConfig(state_dir="/x")
    assert merge_toml(base, "  \n") is base


def test_defaults():
    config = AgentConfig()
    assert config.list_dir.as_posix() == "/var/lib/prefetch-advisor/lists"
    assert config.allowed_list_dirs == (config.list_dir,)


@pytest.mark.parametrize(
    "text, message",
    [
        ("[agent\n", "invalid TOML"),
        ("[agent]\nplugin_index = \"1\"\n", "two digits"),
        ("[agent]\nbogus = 1\n", "unknown key 'bogus'"),
        ("[nope]\n", "unknown table"),
        ("[agent]\nhandler_budget_s = 3\n", "handler_budget_s"),
        ("[trace]\nwindow_s = \"long\"\n", "must be a number"),
        ("[trace]\nwindow_s = 0\n", "must be > 0"),
        ("[trace]\nenabled = 1\n", "true or false"),
        ("[readiness.\"a/b/c\"]\nmarker = \"rel\"\n", "absolute"),
        ("[readiness.\"a/b/c\"]\nmarker = \"/r\"\nprobe = [\"true\"]\n", "not both"),
        ("[inject]\nallowed_list_dirs = \"/x\"\n", "list of strings"),
        ("[agent]\nstate_dir = \"rel\"\n", "absolute"),
    ],
)
def test_bad_config_is_a_clear_error(text, message):
    with pytest.raises(ConfigError, match=message):
        merge_toml(AgentConfig(), text)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config"):
        load_file(tmp_path / "missing.toml")
