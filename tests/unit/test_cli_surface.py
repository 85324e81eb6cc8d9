"""The CLIs' surface without a session: flags and their config keys, usage errors,
and the ``pipeline-receive`` command the sender prints."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from pipeline.cli import receiving, sending
from pipeline.cli.common import NOT_CONFIG, build_config, log_level
from pipeline.config import Config
from pipeline.signaling.server import SignalingServer, reachable_hosts, ws_url
from tests.unit.test_config import _struct_keys

CLIS = [
    pytest.param(sending, ["a.txt"], id="pipeline-send"),
    pytest.param(receiving, ["7-orbit-lantern-velvet"], id="pipeline-receive"),
]


def options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """Every option (not the positionals: paths, code) a user can give."""
    return [a for a in parser._actions if a.option_strings and a.dest not in NOT_CONFIG]


# -- every option has a config key ----------------------------------------------------------


@pytest.mark.parametrize(("cli", "positional"), CLIS)
def test_every_option_maps_to_a_config_key(cli: Any, positional: list[str]) -> None:
    parser = cli.build_parser()
    keys = _struct_keys(Config())
    unmapped = [a.option_strings[0] for a in options(parser) if a.dest not in cli.FLAGS]
    assert unmapped == [], f"{cli.PROG}: options without a config key in FLAGS: {unmapped}"
    wrong = {dest: key for dest, key in cli.FLAGS.items() if key not in keys}
    assert wrong == {}, f"{cli.PROG}: FLAGS name keys that Config does not have: {wrong}"
    # And no stale entry: each FLAGS entry is an option of this CLI.
    dests = {a.dest for a in options(parser)}
    assert set(cli.FLAGS) <= dests, set(cli.FLAGS) - dests


def test_code_flag_and_config_key_set_the_senders_code(tmp_path: Path) -> None:
    args = sending.parse_args(["a.txt", "--code", " 7-Orbit-Lantern-Velvet "])
    assert build_config(sending.PROG, args, sending.FLAGS).signal.code == " 7-Orbit-Lantern-Velvet "
    config = tmp_path / "code.yaml"
    config.write_text("signal:\n  code: 12-amber-quartz-river\n")
    args = sending.parse_args(["a.txt", "--config", str(config)])
    assert build_config(sending.PROG, args, sending.FLAGS).signal.code == "12-amber-quartz-river"


def test_a_malformed_code_is_a_one_line_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    args = sending.parse_args(["a.txt", "--code", "orbit lantern"])
    with pytest.raises(SystemExit) as info:
        build_config(sending.PROG, args, sending.FLAGS)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert err.startswith("pipeline-send: error: --code: signal.code: not a room code"), err
    assert "7-orbit-lantern-velvet" in err and "'orbit lantern'" in err


@pytest.mark.parametrize(("cli", "positional"), CLIS)
def test_verbose_counts_into_output_verbose(cli: Any, positional: list[str]) -> None:
    def verbose(*extra: str) -> int:
        cfg: Config = build_config(cli.PROG, cli.parse_args([*positional, *extra]), cli.FLAGS)
        return cfg.output.verbose

    assert verbose() == 0
    assert verbose("-v") == 1
    assert verbose("-vv", "--verbose") == 3
    assert log_level(verbose("-vv")) == logging.DEBUG


# -- usage errors: one line, exit 2 ---------------------------------------------------------


@pytest.mark.parametrize(
    ("parse", "argv", "expected"),
    [
        (sending.parse_args, ["a.txt", "--window"], "argument --window: expected one argument"),
        (receiving.parse_args, [], "the following arguments are required: code"),
        (receiving.parse_args, ["x", "--bogus"], "unrecognized arguments: --bogus"),
        (receiving.parse_args, ["x", "--progress", "fancy"], "argument --progress: invalid choice: 'fancy'"),
        (receiving.parse_args, ["x", "--overwrite", "--rename"], "argument --rename: not allowed with argument --overwrite"),
    ],
)
def test_usage_errors_are_one_line_and_exit_2(
    capsys: pytest.CaptureFixture[str], parse: Callable[[list[str]], argparse.Namespace], argv: list[str], expected: str
) -> None:
    with pytest.raises(SystemExit) as info:
        parse(argv)
    assert info.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    prog = "pipeline-send" if parse is sending.parse_args else "pipeline-receive"
    assert lines[0].startswith(f"{prog}: error: {expected}"), lines[0]
    assert lines[0].endswith(f"(see {prog} --help)"), lines[0]


def test_the_config_names_the_sources_of_a_batch_and_paths_replace_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "batch.yaml"
    config.write_text("send:\n  sources: [/srv/a, b]\n")
    args = sending.parse_args(["--config", str(config)])
    cfg = build_config(sending.PROG, args, sending.FLAGS)
    assert sending.source_paths(args, cfg) == ["/srv/a", "b"]
    args = sending.parse_args(["--config", str(config), "c"])
    assert sending.source_paths(args, build_config(sending.PROG, args, sending.FLAGS)) == ["c"]
    args = sending.parse_args([])
    with pytest.raises(SystemExit) as info:
        sending.source_paths(args, build_config(sending.PROG, args, sending.FLAGS))
    assert info.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line == "pipeline-send: error: no PATH given and send.sources is empty (see pipeline-send --help)"


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("send:\n  sources: [a, '']\n", "send.sources[1]: "),
        ("send:\n  sources: a\n", "send.sources: "),
        ("send:\n  source: [a]\n", "send.source: unknown key (did you mean sources?)"),
    ],
)
def test_a_bad_send_sources_is_a_one_line_file_and_field_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], yaml_text: str, expected: str
) -> None:
    config = tmp_path / "batch.yaml"
    config.write_text(yaml_text)
    args = sending.parse_args(["--config", str(config)])
    with pytest.raises(SystemExit) as info:
        build_config(sending.PROG, args, sending.FLAGS)
    assert info.value.code == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert f"{config}: {expected}" in line, line


@pytest.mark.parametrize(("cli", "positional"), CLIS)
def test_help_still_prints_everything(cli: Any, positional: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.parse_args(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {cli.PROG} ")
    for action in options(cli.build_parser()):
        assert action.option_strings[0] in out, action.option_strings


# -- the URL the sender prints for its embedded server ----------------------------------------

HERE = ["127.0.0.1", "::1", "192.0.2.7", "fe80::1%eth0", "169.254.3.4", "2001:db8::5", "fd00::2", "02:fc:00:00:00:01"]


@pytest.mark.parametrize(
    ("bind", "addresses", "expected"),
    [
        pytest.param("127.0.0.1", HERE, ["127.0.0.1"], id="loopback-is-kept"),
        pytest.param("192.0.2.7", HERE, ["192.0.2.7"], id="an-address-is-kept"),
        pytest.param("signal.example", HERE, ["signal.example"], id="a-name-is-kept"),
        pytest.param("0.0.0.0", HERE, ["192.0.2.7"], id="ipv4-wildcard"),
        pytest.param("::", HERE, ["2001:db8::5", "fd00::2"], id="ipv6-wildcard"),
        pytest.param("0.0.0.0", ["10.0.0.2", "192.168.1.9", "10.0.0.2"], ["10.0.0.2", "192.168.1.9"], id="one-each"),
        pytest.param("0.0.0.0", ["127.0.0.1", "::1", "169.254.1.1"], ["127.0.0.1"], id="ipv4-nothing-else"),
        pytest.param("::", ["127.0.0.1", "192.0.2.7", "fe80::1%lo"], ["::1"], id="ipv6-nothing-else"),
        pytest.param("0.0.0.0", [], ["127.0.0.1"], id="no-interfaces"),
    ],
)
def test_a_wildcard_bind_becomes_addresses_another_machine_can_reach(
    bind: str, addresses: list[str], expected: list[str]
) -> None:
    assert reachable_hosts(bind, addresses) == expected


def test_ws_url_brackets_ipv6() -> None:
    assert ws_url("192.0.2.7", 8787) == "ws://192.0.2.7:8787/ws"
    assert ws_url("fd00::2", 8787) == "ws://[fd00::2]:8787/ws"


def test_an_embedded_server_on_the_wildcard_prints_this_machines_addresses() -> None:
    async def urls() -> tuple[str, list[str]]:
        async with SignalingServer(host="0.0.0.0", port=0) as server:
            return server.url, server.reachable_urls

    bound, reachable = asyncio.run(urls())
    port = int(bound.rsplit(":", 1)[1].removesuffix("/ws"))
    assert bound == f"ws://0.0.0.0:{port}/ws"
    mine = [str(a.address) for addrs in psutil.net_if_addrs().values() for a in addrs]
    assert reachable, bound
    for url in reachable:
        assert url.startswith("ws://") and url.endswith(f":{port}/ws"), url
        host = url.removeprefix("ws://").rsplit(":", 1)[0]
        assert host in mine, (host, mine)  # never 0.0.0.0
        assert ipaddress.ip_address(host).version == 4
    assert reachable == [ws_url(host, port) for host in reachable_hosts("0.0.0.0", mine)]


def test_the_printed_commands_one_per_url() -> None:
    one = sending.receive_commands("7-orbit-lantern-velvet", ["ws://127.0.0.1:5/ws"])
    assert one.splitlines() == ["On the receiving side run:", "  pipeline-receive 7-orbit-lantern-velvet --signal ws://127.0.0.1:5/ws"]
    urls = ["ws://192.0.2.7:5/ws", "ws://10.0.0.2:5/ws"]
    lines = sending.receive_commands("7-orbit-lantern-velvet", urls).splitlines()
    assert lines[0].startswith("On the receiving side run one of these")
    assert lines[1:] == [f"  pipeline-receive 7-orbit-lantern-velvet --signal {url}" for url in urls]


def test_the_printed_commands_add_a_browser_link_when_the_page_is_served() -> None:
    urls = ["ws://192.0.2.7:5/ws", "ws://10.0.0.2:5/ws"]
    lines = sending.receive_commands("7-orbit-lantern-velvet", urls, page=True).splitlines()
    assert lines[3] == "or open in a browser:"
    assert lines[4:] == [f"  http://{host}:5/#7-orbit-lantern-velvet" for host in ("192.0.2.7", "10.0.0.2")]
    assert "browser" not in sending.receive_commands("7-orbit-lantern-velvet", urls)
