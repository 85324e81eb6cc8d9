"""Typed configuration: YAML file -> msgspec Structs -> one validated, frozen ``Config``.

Every key has a default, so an empty file (or no file) is a valid configuration;
``configs/default.yaml`` spells all of them out. Errors are one line that names the
file (or command-line flag) and the field, the way a user would type it::

    big.yaml: transfer.chunk_sizee: unknown key (did you mean chunk_size?)
    big.yaml: ice.stun_servers[0]: TURN is not supported: ...
    big.yaml: line 7: mapping values are not allowed here

Checks happen in two layers: ``msgspec.Meta`` constraints on each field (types,
ranges, enums), then :func:`validate` for everything that involves more than one
field or needs a message a regex cannot give. :func:`load_config` and
:func:`apply_overrides` both end in :func:`validate`, so no unchecked ``Config``
leaves this module.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal, get_args

import msgspec
import yaml  # type: ignore[import-untyped]  # no types-PyYAML in requirements.lock

from pipeline.signaling.codes import is_valid_code
from pipeline.units import parse_size

__all__ = [
    "ChannelConfig",
    "Config",
    "ConfigError",
    "IceConfig",
    "OutputConfig",
    "ReceiveConfig",
    "SendConfig",
    "SignalConfig",
    "TransferConfig",
    "apply_overrides",
    "config_to_dict",
    "load_config",
    "validate",
]

KiB: Final = 1024
MiB: Final = 1024 * KiB

# SCTP user messages are at most 262144 bytes in aiortc and Chromium; a DATA frame
# carries a 24-byte header (Appendix B), which leaves this much payload.
MAX_CHUNK_SIZE: Final = 262144 - 24
# The reader fills ring slots ahead of the sender's window; without this margin it
# stalls whenever the window is full and the next frames are not yet read.
RING_MARGIN: Final = 8
# 4 GiB in flight at 64 KiB chunks: far past any useful bandwidth-delay product.
MAX_WINDOW: Final = 65536

OnExists = Literal["fail", "overwrite", "rename"]
ProgressMode = Literal["auto", "bar", "lines", "none"]

# Bounded above so that .inf (which JSON reports cannot carry) is refused; a day is
# far beyond any useful timeout.
MAX_SECONDS: Final = 86400.0
Seconds = Annotated[float, msgspec.Meta(gt=0, le=MAX_SECONDS)]
# RTCDataChannelInit declares both partial-reliability limits as `unsigned short`.
UShort = Annotated[int, msgspec.Meta(ge=0, le=65535)]


class ConfigError(Exception):
    """A configuration or usage error; ``str()`` is one line: ``source: field: problem``."""

    def __init__(self, source: str, field: str | None, problem: str) -> None:
        self.source = source
        self.field = field
        self.problem = problem
        parts = [source, field, problem] if field else [source, problem]
        super().__init__(": ".join(_one_line(part) for part in parts))


def _one_line(text: str) -> str:
    """Escape what would break a one-line message (a key or value may contain anything)."""
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


class SignalConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    url: (
        Annotated[
            str,
            msgspec.Meta(
                pattern=r"^wss?://[^\s/?#]+",
                description="signaling server URL; None: the sender starts an embedded server",
            ),
        ]
        | None
    ) = None
    host: Annotated[str, msgspec.Meta(min_length=1)] = "127.0.0.1"
    port: Annotated[int, msgspec.Meta(ge=0, le=65535)] = 0
    code: str | None = None  # the sender's room code; None: a new random one


class IceConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    stun_servers: list[str] = []
    connect_timeout: Seconds = 20.0
    reconnect_timeout: Annotated[float, msgspec.Meta(ge=0, le=MAX_SECONDS)] = 60.0
    progress_timeout: Seconds = 10.0


# Sender's SCTP flight cap (pipeline/connection/sctp_flight.py): "auto" from the
# path's RTT, "off", or a fixed number of bytes.
FlightCap = Literal["auto", "off"] | Annotated[int, msgspec.Meta(ge=64 * KiB, le=64 * MiB)]


class ChannelConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    ordered: bool = True
    max_retransmits: UShort | None = None
    max_packet_life_time: UShort | None = None
    buffered_high: Annotated[int, msgspec.Meta(gt=0)] = 1 * MiB
    buffered_low: Annotated[int, msgspec.Meta(ge=0)] = 256 * KiB
    flight_cap: FlightCap = "auto"


class TransferConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    chunk_size: Annotated[int, msgspec.Meta(ge=1024, le=MAX_CHUNK_SIZE)] = 65536
    window: Annotated[int, msgspec.Meta(ge=4, le=MAX_WINDOW)] = 128
    ring_slots: Annotated[int, msgspec.Meta(ge=4 + RING_MARGIN, le=MAX_WINDOW + RING_MARGIN)] = 192
    rto_initial: Seconds = 2.0
    rto_max: Seconds = 30.0
    ack_interval: Seconds = 0.2


class SendConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    # Files and directories to send when the command line names none.
    sources: list[Annotated[str, msgspec.Meta(min_length=1)]] = []


class ReceiveConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    out: Annotated[str, msgspec.Meta(min_length=1)] = "."
    yes: bool = False
    on_exists: OnExists = "fail"


class OutputConfig(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    json: str | None = None
    telemetry: str | None = None
    quiet: bool = False
    progress: ProgressMode = "auto"
    verbose: Annotated[int, msgspec.Meta(ge=0)] = 0


class Config(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    signal: SignalConfig = msgspec.field(default_factory=SignalConfig)
    ice: IceConfig = msgspec.field(default_factory=IceConfig)
    channel: ChannelConfig = msgspec.field(default_factory=ChannelConfig)
    transfer: TransferConfig = msgspec.field(default_factory=TransferConfig)
    send: SendConfig = msgspec.field(default_factory=SendConfig)
    receive: ReceiveConfig = msgspec.field(default_factory=ReceiveConfig)
    output: OutputConfig = msgspec.field(default_factory=OutputConfig)


_SECTIONS: Final[dict[str, type[msgspec.Struct]]] = {
    "signal": SignalConfig,
    "ice": IceConfig,
    "channel": ChannelConfig,
    "transfer": TransferConfig,
    "send": SendConfig,
    "receive": ReceiveConfig,
    "output": OutputConfig,
}
# Byte counts that may also be written as "1MiB", "64K" (see pipeline.units.parse_size).
_SIZE_FIELDS: Final = frozenset(
    {"channel.buffered_high", "channel.buffered_low", "channel.flight_cap", "transfer.chunk_size"}
)
# Words a size field takes besides sizes.
_SIZE_WORDS: Final[dict[str, tuple[str, ...]]] = {"channel.flight_cap": ("auto", "off")}
_CHOICES: Final[dict[str, tuple[str, ...]]] = {
    "receive.on_exists": get_args(OnExists),
    "output.progress": get_args(ProgressMode),
}
# What a failed `Meta(pattern=...)` means, in words.
_PATTERN_HINTS: Final[dict[str, str]] = {
    "signal.url": "must be a ws:// or wss:// URL of the signaling server",
}
_TYPE_WORDS: Final[dict[str, str]] = {
    "`str | null`": "a string or null",
    "`int | null`": "an integer or null",
    "`int`": "an integer",
    "`float`": "a number",
    "`str`": "a string",
    "`bool`": "true or false",
    "`array`": "a list",
    "`object`": "a mapping",
    "`null`": "nothing (null)",
}

# ---------------------------------------------------------------------------
# Public API


def load_config(path: str | None) -> Config:
    """Read a YAML config; ``None`` gives the defaults. Raises :class:`ConfigError`."""
    if path is None:
        return Config()
    return _build(_read_yaml(path), source=path, strict=True, labels={})


def apply_overrides(
    config: Config,
    overrides: Mapping[str, object] | None = None,
    /,
    *,
    flags: Mapping[str, str] | None = None,
    source: str = "command line",
    **dotted: object,
) -> Config:
    """A new validated ``Config`` with dotted keys replaced, e.g.
    ``apply_overrides(cfg, {"signal.url": "wss://x", "ice.stun_servers": ["stun:h"]})``.

    Keys may also be passed as keyword arguments (``**{"transfer.window": 256}``).
    Every value given is applied, ``None`` included: callers pass only the flags the
    user set. Values may be strings as typed on a command line (``"20"`` for a float,
    ``"64KiB"`` for a size). ``flags`` maps a key to the flag that set it, so an
    error reads ``--stun: ice.stun_servers[0]: ...``; errors not tied to one key
    (cross-field checks) are reported against ``source``.
    """
    merged: dict[str, object] = {**(overrides or {}), **dotted}
    labels = dict(flags or {})
    data = config_to_dict(config)
    for key, value in merged.items():
        label = labels.get(key, source)
        parts = key.split(".")
        if not all(parts):
            raise ConfigError(label, key, "not a dotted key like transfer.window")
        node: Any = data
        for depth, part in enumerate(parts[:-1]):
            node = node.get(part) if isinstance(node, dict) else None
            if node is not None and not isinstance(node, dict):
                setting = ".".join(parts[: depth + 1])
                raise ConfigError(
                    label, key, f"unknown key ({setting} is a setting, not a section)"
                )
            if node is None:
                parent = ".".join(parts[:depth])
                raise ConfigError(label, key, "unknown key" + _suggestion(parent, part))
        node[parts[-1]] = value
    return _build(data, source=source, strict=False, labels=labels)


def config_to_dict(cfg: Config) -> dict[str, Any]:
    """Plain nested dicts/lists (what ``--json`` output and ``apply_overrides`` use)."""
    result: dict[str, Any] = msgspec.to_builtins(cfg)
    return result


def validate(cfg: Config, source: str = "<config>") -> Config:
    """Check ``cfg`` completely and return it; raise :class:`ConfigError` otherwise.

    Re-checks the per-field ``Meta`` constraints (a ``Config`` built in code skips
    them), then the rules that involve several fields.
    """
    try:
        msgspec.convert(config_to_dict(cfg), Config)
    except msgspec.ValidationError as exc:
        field, problem = _describe(exc, config_to_dict(cfg))
        raise ConfigError(source, field, problem) from None

    code = cfg.signal.code
    if code is not None and not is_valid_code(code):
        raise ConfigError(
            source, "signal.code", f"not a room code (they look like 7-orbit-lantern-velvet), got {code!r}"
        )

    for index, url in enumerate(cfg.ice.stun_servers):
        stun_problem = _stun_url_problem(url)
        if stun_problem:
            raise ConfigError(source, f"ice.stun_servers[{index}]", stun_problem)

    ch = cfg.channel
    if ch.max_retransmits is not None and ch.max_packet_life_time is not None:
        raise ConfigError(
            source,
            "channel.max_packet_life_time",
            "cannot be set together with channel.max_retransmits (WebRTC allows one "
            "partial-reliability limit per channel); set one of them to null",
        )
    if ch.buffered_low >= ch.buffered_high:
        raise ConfigError(
            source,
            "channel.buffered_low",
            f"must be less than channel.buffered_high ({ch.buffered_high}); got {ch.buffered_low}",
        )

    tr = cfg.transfer
    if tr.ring_slots < tr.window + RING_MARGIN:
        raise ConfigError(
            source,
            "transfer.ring_slots",
            f"must be at least transfer.window + {RING_MARGIN} = {tr.window + RING_MARGIN} "
            f"(the window's frames plus room for the reader to work ahead); got {tr.ring_slots}",
        )
    if tr.rto_initial > tr.rto_max:
        raise ConfigError(
            source,
            "transfer.rto_initial",
            f"must not exceed transfer.rto_max ({tr.rto_max}); got {tr.rto_initial}",
        )
    if tr.ack_interval >= tr.rto_initial:
        raise ConfigError(
            source,
            "transfer.ack_interval",
            f"must be less than transfer.rto_initial ({tr.rto_initial}), or every frame "
            f"is retransmitted before its acknowledgement can arrive; got {tr.ack_interval}",
        )
    return cfg


# ---------------------------------------------------------------------------
# Reading YAML


class _StrictLoader(yaml.SafeLoader):  # type: ignore[misc]  # yaml is untyped
    """``yaml.safe_load``, with two YAML 1.1 traps closed.

    * A key given twice is an error, not "last one wins".
    * Only true/false are booleans (as in YAML 1.2). YAML 1.1 also reads yes/no/on/off
      as booleans, which would turn the key ``yes:`` of ``receive`` into ``True``.
    """


_BOOL_TAG: Final = "tag:yaml.org,2002:bool"
_StrictLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _BOOL_TAG]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_StrictLoader.add_implicit_resolver(
    _BOOL_TAG, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _construct_mapping(loader: Any, node: Any, deep: bool = False) -> Any:
    seen: set[object] = set()
    for key_node, _value_node in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            duplicate = key in seen
            seen.add(key)
        except TypeError:  # unhashable key; construct_mapping reports it properly
            break
        if duplicate:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _read_yaml(path: str) -> object:
    try:
        with open(path, "rb") as f:
            raw = f.read()
        text = raw.decode("utf-8")
    except OSError as exc:
        raise ConfigError(path, None, f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(path, None, f"cannot read: not UTF-8 text (byte {exc.start})") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        where = f"line {mark.line + 1}" if mark is not None else "YAML"
        raise ConfigError(path, where, problem) from None
    except yaml.YAMLError as exc:
        raise ConfigError(path, None, " ".join(str(exc).split())) from None


# ---------------------------------------------------------------------------
# Conversion and error messages


def _build(data: object, *, source: str, strict: bool, labels: Mapping[str, str]) -> Config:
    if data is None:  # an empty file: all defaults
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            source,
            None,
            f"expected a mapping of sections ({', '.join(_SECTIONS)}), got {_type_word(data)}",
        )
    # A section whose keys are all commented out parses as null: it means "defaults".
    data = {k: {} if v is None and k in _SECTIONS else v for k, v in data.items()}
    try:
        data = _parse_sizes(data)
        cfg = msgspec.convert(data, Config, strict=strict)
    except _SizeError as exc:
        raise ConfigError(_label_for(exc.field, labels, source), exc.field, exc.problem) from None
    except msgspec.ValidationError as exc:
        field, problem = _describe(exc, data)
        raise ConfigError(_label_for(field, labels, source), field, problem) from None
    try:
        return validate(cfg, source)
    except ConfigError as exc:
        exc_source = _label_for(exc.field or "", labels, source)
        if exc_source == source:
            raise
        raise ConfigError(exc_source, exc.field, exc.problem) from None


def _label_for(field: str, labels: Mapping[str, str], default: str) -> str:
    """The flag that set ``field`` (or a key containing it), else ``default``."""
    for key, label in labels.items():
        if field == key or field.startswith((key + ".", key + "[")) or key.startswith(field + "."):
            return label
    return default


class _SizeError(Exception):
    def __init__(self, field: str, problem: str) -> None:
        super().__init__(problem)
        self.field = field
        self.problem = problem


def _parse_sizes(data: dict[str, Any]) -> dict[str, Any]:
    out = dict(data)
    for dotted in _SIZE_FIELDS:
        section, key = dotted.split(".")
        sub = out.get(section)
        if isinstance(sub, dict) and isinstance(sub.get(key), str):
            if sub[key] in _SIZE_WORDS.get(dotted, ()):
                continue
            try:
                out[section] = {**sub, key: parse_size(sub[key])}
            except ValueError as exc:
                words = _SIZE_WORDS.get(dotted)
                also = f"; or one of {', '.join(words)}" if words else ""
                raise _SizeError(dotted, f"{exc}{also}") from None
    return out


_AT_PATH = re.compile(r" - at (?P<key>`key` in )?`\$(?P<path>[^`]*)`$")
_UNKNOWN_FIELD = re.compile(r"^Object contains unknown field `(?P<name>[^`]*)`$")
_PATH_TOKEN = re.compile(r"\.([^.\[]+)|\[(\d+)\]")
_MISSING = object()


def _describe(exc: msgspec.ValidationError, data: object) -> tuple[str, str]:
    """msgspec's ``Expected ... - at `$.ice.stun_servers[0]``` -> (field path, problem)."""
    message = str(exc)
    at = _AT_PATH.search(message)
    raw_path = at.group("path") if at else ""
    if at:
        message = message[: at.start()]
    field = raw_path.lstrip(".")
    if at and at.group("key"):
        node = _lookup(data, raw_path) if raw_path else data
        keys = [k for k in node if not isinstance(k, str)] if isinstance(node, dict) else []
        return (
            field,
            f"every key must be a string, got {', '.join(map(repr, keys)) or 'another type'}",
        )

    unknown = _UNKNOWN_FIELD.match(message)
    if unknown:
        name = unknown.group("name")
        full = f"{field}.{name}" if field else name
        return full, "unknown key" + _suggestion(field, name)

    value = _lookup(data, raw_path)
    if field in _CHOICES:
        problem = f"must be one of {', '.join(_CHOICES[field])}"
    elif "matching regex" in message and field in _PATTERN_HINTS:
        problem = _PATTERN_HINTS[field]
    else:
        problem = message[:1].lower() + message[1:]
        for token, words in _TYPE_WORDS.items():
            problem = problem.replace(token, words)
    if field in _SECTIONS and ", got " in problem:
        problem = f"expected a mapping of {field} settings" + problem[problem.index(", got") :]
    elif value is not _MISSING:
        # The value itself says more than its type ("got 'yes'" vs "got a string").
        problem = problem.split(", got ", 1)[0] + f", got {value!r}"
    return field, problem


def _suggestion(section: str, name: str) -> str:
    if not section:
        candidates: list[str] = list(_SECTIONS)
    elif section in _SECTIONS:
        candidates = list(_SECTIONS[section].__struct_fields__)
    else:
        return ""
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def _lookup(data: object, raw_path: str) -> object:
    node: object = data
    for name, index in _PATH_TOKEN.findall(raw_path):
        if name and isinstance(node, dict) and name in node:
            node = node[name]
        elif index and isinstance(node, list) and int(index) < len(node):
            node = node[int(index)]
        else:
            return _MISSING
    return node if raw_path else _MISSING


def _type_word(value: object) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "true or false"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__


_STUN_URL = re.compile(r"stun:(?P<host>[^\s:?/\[\]@]+)(?::(?P<port>[0-9]{1,5}))?")


def stun_address(url: str) -> tuple[str, int]:
    """``stun:host[:port]`` (already validated) -> ``(host, port)``; port 3478 by default."""
    match = _STUN_URL.fullmatch(url)
    if match is None:
        raise ValueError(f"not a stun:host[:port] URL: {url!r}")
    return match.group("host"), int(match.group("port") or 3478)


def _stun_url_problem(url: str) -> str | None:
    """Why ``url`` is not a usable ``stun:host[:port]``, or ``None`` if it is."""
    scheme = url.split(":", 1)[0].lower()
    if scheme in ("turn", "turns"):
        return (
            f"{url!r} is a TURN server, and TURN is not supported: this tool never relays "
            "file bytes through a server, it only uses direct peer-to-peer paths; "
            "list STUN servers (stun:host[:port]) only"
        )
    if scheme == "stuns":
        return (
            f"{url!r}: stuns: (STUN over TLS) is not supported because aiortc silently "
            "ignores stuns: servers; use stun:host[:port]"
        )
    if url.startswith("stun:["):
        return (
            f"{url!r}: IPv6 address literals are not accepted (aiortc cannot parse them); "
            "use a host name that resolves to the address"
        )
    if url.startswith("stun://"):
        return f"expected stun:host[:port] (no '//'), got {url!r}"
    match = _STUN_URL.fullmatch(url)
    if match is None:
        if _STUN_URL.fullmatch("stun:" + url):
            return f"expected stun:host[:port], got {url!r} (did you mean 'stun:{url}'?)"
        return f"expected stun:host[:port], got {url!r}"
    port = match.group("port")
    if port is not None and not 1 <= int(port) <= 65535:
        return f"port must be 1..65535, got {url!r}"
    return None
