"""Config loading, validation and the one-line error messages users see."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pipeline.config import (
    ChannelConfig,
    Config,
    ConfigError,
    TransferConfig,
    apply_overrides,
    config_to_dict,
    load_config,
    validate,
)
from pipeline.units import parse_size

REPO = Path(__file__).resolve().parents[2]
DEFAULT_YAML = REPO / "configs" / "default.yaml"
BIG_YAML = REPO / "configs" / "big.yaml"


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "cfg.yaml"
    path.write_text(text, encoding="utf-8")
    return str(path)


def load_error(tmp_path: Path, text: str) -> str:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message, message
    assert message.startswith(f"{path}: "), message
    return message[len(path) + 2 :]


# -- shipped files -----------------------------------------------------------


def test_default_yaml_is_exactly_the_defaults() -> None:
    assert load_config(str(DEFAULT_YAML)) == Config()
    assert load_config(None) == Config()


def _struct_keys(cfg: msgspec.Struct, prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for name in cfg.__struct_fields__:
        value = getattr(cfg, name)
        if isinstance(value, msgspec.Struct):
            keys |= _struct_keys(value, f"{prefix}{name}.")
        else:
            keys.add(prefix + name)
    return keys


def _yaml_keys(data: dict[str, Any], prefix: str = "") -> set[str]:
    keys: set[str] = set()
    for name, value in data.items():
        if isinstance(value, dict):
            keys |= _yaml_keys(value, f"{prefix}{name}.")
        else:
            keys.add(prefix + name)
    return keys


def _uncommented_keys(text: str) -> list[str]:
    """Leaf keys with no comment on the line itself or directly above."""
    lines = text.splitlines()
    missing = []
    for i, line in enumerate(lines):
        match = re.match(r"^\s+(\w+):\s*\S", line)  # indented key with a value
        if match and "#" not in line and not lines[i - 1].lstrip().startswith("#"):
            missing.append(match.group(1))
    return missing


def test_default_yaml_spells_out_and_explains_every_key() -> None:
    text = DEFAULT_YAML.read_text(encoding="utf-8")
    # BaseLoader keeps every scalar a string: `yes:` stays the key "yes".
    assert _yaml_keys(yaml.load(text, Loader=yaml.BaseLoader)) == _struct_keys(Config())
    assert _uncommented_keys(text) == []
    # Each comment block states the default it documents.
    assert text.count("Default") >= len(_struct_keys(Config()))


def test_big_yaml_loads_and_is_tuned_for_long_transfers() -> None:
    cfg = load_config(str(BIG_YAML))
    assert cfg.transfer.window > Config().transfer.window
    assert cfg.transfer.ring_slots >= cfg.transfer.window + 8
    assert cfg.ice.reconnect_timeout > Config().ice.reconnect_timeout
    assert cfg.ice.progress_timeout > Config().ice.progress_timeout
    assert _uncommented_keys(BIG_YAML.read_text(encoding="utf-8")) == []


# -- file errors ---------------------------------------------------------------


def test_unknown_key_names_file_and_field(tmp_path: Path) -> None:
    assert load_error(tmp_path, "transfer:\n  chunk_sizee: 5\n").startswith(
        "transfer.chunk_sizee: unknown key"
    )
    assert "did you mean chunk_size" in load_error(tmp_path, "transfer:\n  chunk_sizee: 5\n")
    assert load_error(tmp_path, "tranfer: {}\n").startswith("tranfer: unknown key")
    assert load_error(tmp_path, "transfer:\n  bogus: 1\n") == "transfer.bogus: unknown key"


def test_msgspec_path_becomes_dotted_field(tmp_path: Path) -> None:
    message = load_error(tmp_path, 'ice:\n  stun_servers: ["stun:a", 5]\n')
    assert message.startswith("ice.stun_servers[1]: ")
    assert load_error(tmp_path, "transfer:\n  window: 2\n").startswith("transfer.window: ")
    assert load_error(tmp_path, "signal:\n  port: 70000\n") == (
        "signal.port: expected an integer <= 65535, got 70000"
    )
    assert load_error(tmp_path, "transfer:\n  window: abc\n").endswith("got 'abc'")


@pytest.mark.parametrize("scheme", ["turn", "turns", "TURN"])
def test_turn_is_refused_with_the_reason(tmp_path: Path, scheme: str) -> None:
    message = load_error(tmp_path, f'ice:\n  stun_servers: ["{scheme}:relay.example:3478"]\n')
    assert message.startswith("ice.stun_servers[0]: ")
    assert "TURN is not supported" in message
    assert "never relays file bytes through a server" in message


def test_stuns_is_refused_because_aiortc_ignores_it(tmp_path: Path) -> None:
    message = load_error(tmp_path, 'ice:\n  stun_servers: ["stuns:stun.example"]\n')
    assert "aiortc" in message


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        ("stun.l.google.com:19302", "did you mean 'stun:stun.l.google.com:19302'"),
        ("stun://stun.example", "no '//'"),
        ("stun:[2001:db8::1]:3478", "IPv6"),
        ("stun:host:99999", "port"),
        ("stun:host?transport=udp", "stun:host[:port]"),
    ],
)
def test_malformed_stun_urls(tmp_path: Path, url: str, hint: str) -> None:
    assert hint in load_error(tmp_path, f'ice:\n  stun_servers: ["{url}"]\n')


def test_valid_stun_urls_are_kept(tmp_path: Path) -> None:
    urls = ["stun:stun.l.google.com:19302", "stun:198.51.100.10", "stun:localhost:3478"]
    cfg = load_config(write(tmp_path, f"ice:\n  stun_servers: {urls}\n"))
    assert cfg.ice.stun_servers == urls


def test_signal_url_must_be_websocket(tmp_path: Path) -> None:
    message = load_error(tmp_path, "signal:\n  url: http://example.org/room\n")
    assert message.startswith("signal.url: ") and "ws://" in message
    cfg = load_config(write(tmp_path, "signal:\n  url: wss://signal.example:8443/x\n"))
    assert cfg.signal.url == "wss://signal.example:8443/x"


def test_signal_code_is_checked_like_the_code_flag(tmp_path: Path) -> None:
    assert Config().signal.code is None  # a new random code each time
    cfg = load_config(write(tmp_path, "signal:\n  code: 12-Amber-Quartz-River\n"))
    assert cfg.signal.code == "12-Amber-Quartz-River"  # the sender normalizes it
    assert load_error(tmp_path, "signal:\n  code: amber quartz\n") == (
        "signal.code: not a room code (they look like 7-orbit-lantern-velvet), got 'amber quartz'"
    )
    assert load_error(tmp_path, "signal:\n  code: 7\n") == "signal.code: expected a string or null, got 7"
    with pytest.raises(ConfigError, match=r"^--code: signal\.code: not a room code"):
        apply_overrides(Config(), {"signal.code": "x"}, flags={"signal.code": "--code"})


def test_output_verbose_is_a_count(tmp_path: Path) -> None:
    assert Config().output.verbose == 0
    assert load_config(write(tmp_path, "output:\n  verbose: 2\n")).output.verbose == 2
    assert load_error(tmp_path, "output:\n  verbose: -1\n") == "output.verbose: expected an integer >= 0, got -1"


def test_enum_error_lists_the_choices(tmp_path: Path) -> None:
    assert load_error(tmp_path, "receive:\n  on_exists: replace\n") == (
        "receive.on_exists: must be one of fail, overwrite, rename, got 'replace'"
    )


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    message = load_error(tmp_path, "signal:\n  host: 127.0.0.1\n  port: [1\n")
    assert re.match(r"line \d+: ", message), message


def test_duplicate_key_is_an_error_not_last_wins(tmp_path: Path) -> None:
    assert load_error(tmp_path, "transfer:\n  window: 8\n  window: 16\n") == (
        "line 3: duplicate key 'window'"
    )


def test_yes_key_is_not_a_yaml11_boolean(tmp_path: Path) -> None:
    # YAML 1.1 reads `yes` as True, which would make `receive.yes` an unknown key.
    assert load_config(write(tmp_path, "receive:\n  yes: true\n")).receive.yes is True
    assert load_error(tmp_path, "receive:\n  yes: yes\n") == (
        "receive.yes: expected true or false, got 'yes'"
    )


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match=r"nope\.yaml: cannot read: No such file"):
        load_config(missing)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path))
    binary = tmp_path / "bin.yaml"
    binary.write_bytes(b"\xff\xfe\x00junk")
    with pytest.raises(ConfigError, match="cannot read: not UTF-8"):
        load_config(str(binary))


def test_empty_file_and_empty_section_mean_defaults(tmp_path: Path) -> None:
    assert load_config(write(tmp_path, "")) == Config()
    assert load_config(write(tmp_path, "ice:\n  # all commented out\n")) == Config()


def test_top_level_must_be_a_mapping(tmp_path: Path) -> None:
    assert "expected a mapping of sections" in load_error(tmp_path, "- 1\n- 2\n")
    assert load_error(tmp_path, "ice: 5\n").startswith("ice: expected a mapping of ice settings")


def test_sizes_accept_units(tmp_path: Path) -> None:
    cfg = load_config(
        write(
            tmp_path,
            "channel:\n  buffered_high: 2MiB\n  buffered_low: 512K\ntransfer:\n  chunk_size: 16KiB\n",
        )
    )
    assert cfg.channel.buffered_high == 2 * 1024 * 1024
    assert cfg.channel.buffered_low == 512 * 1024
    assert cfg.transfer.chunk_size == 16384
    assert load_error(tmp_path, "transfer:\n  chunk_size: lots\n").startswith(
        "transfer.chunk_size: not a size"
    )


def test_flight_cap_takes_auto_off_or_a_size(tmp_path: Path) -> None:
    assert Config().channel.flight_cap == "auto"
    for text, value in (("auto", "auto"), ("off", "off"), ("1MiB", 1024 * 1024), ("300000", 300000)):
        cfg = load_config(write(tmp_path, f"channel:\n  flight_cap: {text}\n"))
        assert cfg.channel.flight_cap == value, text
    message = load_error(tmp_path, "channel:\n  flight_cap: fast\n")
    assert message.startswith("channel.flight_cap: not a size") and message.endswith("or one of auto, off"), message
    assert load_error(tmp_path, "channel:\n  flight_cap: 1KiB\n").startswith("channel.flight_cap")


# -- cross-field rules -------------------------------------------------------------


def test_ring_slots_must_cover_window_plus_margin(tmp_path: Path) -> None:
    message = load_error(tmp_path, "transfer:\n  window: 200\n")
    assert message.startswith("transfer.ring_slots: must be at least transfer.window + 8 = 208")
    ok = load_config(write(tmp_path, "transfer:\n  window: 200\n  ring_slots: 208\n"))
    assert ok.transfer.ring_slots == 208


def test_buffered_low_below_high(tmp_path: Path) -> None:
    message = load_error(tmp_path, "channel:\n  buffered_high: 1000\n  buffered_low: 1000\n")
    assert message.startswith("channel.buffered_low: must be less than channel.buffered_high")


def test_partial_reliability_limits_are_exclusive(tmp_path: Path) -> None:
    message = load_error(tmp_path, "channel:\n  max_retransmits: 3\n  max_packet_life_time: 500\n")
    assert message.startswith("channel.max_packet_life_time: cannot be set together")
    cfg = load_config(write(tmp_path, "channel:\n  max_retransmits: 0\n  ordered: false\n"))
    assert cfg.channel.max_retransmits == 0


def test_rto_and_ack_interval_rules(tmp_path: Path) -> None:
    assert load_error(tmp_path, "transfer:\n  rto_initial: 40\n").startswith(
        "transfer.rto_initial:"
    )
    assert load_error(tmp_path, "transfer:\n  ack_interval: 2.0\n").startswith(
        "transfer.ack_interval:"
    )


def test_validate_checks_configs_built_in_code() -> None:
    bad = Config(transfer=TransferConfig(window=2, ring_slots=10))
    with pytest.raises(ConfigError, match=r"^here: transfer\.window: "):
        validate(bad, "here")
    with pytest.raises(ConfigError, match="buffered_low"):
        validate(Config(channel=ChannelConfig(buffered_high=10, buffered_low=10)))
    assert validate(Config()) == Config()


# -- overrides ---------------------------------------------------------------------


def test_overrides_return_a_new_validated_config() -> None:
    base = Config()
    cfg = apply_overrides(
        base,
        {"signal.url": "ws://127.0.0.1:9000/r", "ice.stun_servers": ["stun:a.example"]},
        **{"transfer.window": "256", "transfer.ring_slots": 300, "ice.connect_timeout": "5"},
    )
    assert cfg.signal.url == "ws://127.0.0.1:9000/r"
    assert cfg.ice.stun_servers == ["stun:a.example"]
    assert cfg.transfer.window == 256 and cfg.ice.connect_timeout == 5.0
    assert base == Config()  # unchanged
    assert apply_overrides(base, {"channel.buffered_high": "4MiB"}).channel.buffered_high == 4 << 20


def test_override_errors_name_the_flag() -> None:
    flags = {"ice.stun_servers": "--stun", "transfer.window": "--window"}
    with pytest.raises(ConfigError) as info:
        apply_overrides(Config(), {"ice.stun_servers": ["turn:relay"]}, flags=flags)
    assert str(info.value).startswith("--stun: ice.stun_servers[0]: ")
    with pytest.raises(ConfigError, match=r"^--window: transfer\.window: "):
        apply_overrides(Config(), {"transfer.window": "many"}, flags=flags)
    # A rule across fields is blamed on the command line as a whole.
    with pytest.raises(ConfigError, match=r"^command line: transfer\.ring_slots: "):
        apply_overrides(Config(), {"transfer.window": 500}, flags=flags)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("transfer.windw", "command line: transfer.windw: unknown key (did you mean window?)"),
        ("foo.bar", "command line: foo.bar: unknown key"),
        (
            "transfer.window.x",
            "command line: transfer.window.x: unknown key (transfer.window is a setting, not a section)",
        ),
        ("transfer..x", "command line: transfer..x: not a dotted key like transfer.window"),
    ],
)
def test_override_unknown_keys(key: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        apply_overrides(Config(), {key: 1})
    assert str(info.value) == expected


def test_config_to_dict_round_trips(tmp_path: Path) -> None:
    cfg = load_config(str(BIG_YAML))
    data = config_to_dict(cfg)
    assert data["transfer"]["window"] == 256
    assert msgspec.convert(data, Config) == cfg
    assert load_config(write(tmp_path, yaml.safe_dump(data))) == cfg


_keys = st.sampled_from(
    [f"{section}.{name}" for section, names in config_to_dict(Config()).items() for name in names]
    + ["transfer", "nope.x", "ice.stun_servers"]
)
_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_keys, _values, max_size=4))
@example({"transfer": {"\n": None}})  # a key with a line break once made two lines
@example({"ice.stun_servers": ["stun:a\u2028b"]})
def test_any_override_gives_a_config_or_a_one_line_error(overrides: dict[str, object]) -> None:
    try:
        cfg = apply_overrides(Config(), overrides)
    except ConfigError as exc:
        assert "\n" not in str(exc) and len(str(exc).splitlines()) == 1, str(exc)
        assert str(exc).startswith("command line: ")
    else:
        assert validate(cfg) == cfg


# -- parse_size (the parser sizes in configs and flags go through) -----------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512", 512),
        ("64KiB", 65536),
        ("64K", 65536),
        ("64 kib", 65536),
        ("64KB", 64000),
        ("1G", 1 << 30),
        ("1.5GiB", 3 << 29),
        ("10MB", 10_000_000),
        ("0", 0),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "-1", "1.2.3", "5 parsecs", "0.1K", "1e6"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        parse_size(text)


@given(st.integers(0, 2**60))
def test_parse_size_round_trips_integers(n: int) -> None:
    assert parse_size(str(n)) == n
    assert parse_size(f"{n}KiB") == n * 1024
