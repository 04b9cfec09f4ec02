"""Node configuration: defaults, flags, a TOML file, and validation.

Every setting has one name, used alike in the TOML file (``fsync = "always"``, dashes or
underscores), on the command line (``--fsync always``), in ``CONFIG GET/SET`` and in the
status output. An invalid config is refused with a message naming the bad field.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field

FSYNC_POLICIES = ("always", "everysec", "no")
LOG_LEVELS = ("debug", "info", "warning", "error")


class ConfigError(Exception):
    """A bad setting; the message names the field."""


@dataclass
class NodeConfig:
    node_id: int = 1
    host: str = "127.0.0.1"
    port: int = 6390                 # RESP for clients
    peer_port: int = 0               # peer protocol; 0 = port + 10000
    http_port: int = 0               # status, metrics, dashboard; 0 = port + 20000
    data_dir: str = "./replikv-data"
    fsync: str = "everysec"          # always | everysec | no
    fsync_writer: str = "inline"     # fsync always: "inline" in the event loop, or "thread"
    segment_bytes: int = 64 * 1024 * 1024
    snapshot_every_records: int = 500_000   # 0 = only on BGSAVE
    log_retention_bytes: int = 256 * 1024 * 1024  # log kept after a snapshot, for followers
    max_bulk_len: int = 512 * 1024 * 1024
    max_multibulk_len: int = 1024 * 1024
    max_inline_len: int = 64 * 1024
    max_clients: int = 10_000
    active_expire_hz: int = 10
    log_level: str = "info"
    cluster_name: str = "replikv"
    # replication (mode "leader"); the cluster's nodes and settings come from ``cluster``
    cluster: str = ""                # path of the cluster TOML file; "" = standalone node
    apply_delay_ms: int = 0          # follower: apply records this long after the leader wrote them
    max_lag_ms: int = 0              # follower: refuse reads while further behind (0 = never)
    extra: dict = field(default_factory=dict)

    # settings CONFIG SET may change at run time
    RUNTIME = ("fsync", "snapshot_every_records", "log_retention_bytes", "max_bulk_len",
               "max_multibulk_len", "max_clients", "active_expire_hz", "log_level", "apply_delay_ms",
               "max_lag_ms")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        def port_ok(name, v, zero_ok=False):
            if not isinstance(v, int) or isinstance(v, bool) or not ((zero_ok and v == 0) or 1 <= v <= 65535):
                raise ConfigError(f"{name}: must be a TCP port number (1-65535), got {v!r}")

        for name in FIELDS:
            if _field_type(name) is str and not isinstance(getattr(self, name), str):
                raise ConfigError(f"{name}: must be a string, got {getattr(self, name)!r}")
        port_ok("port", self.port)
        port_ok("peer_port", self.peer_port, True)
        port_ok("http_port", self.http_port, True)
        for name, default in (("peer_port", 10000), ("http_port", 20000)):
            if not getattr(self, name) and self.port + default > 65535:
                raise ConfigError(f"{name}: the default (port+{default}) is beyond 65535 for port {self.port}; "
                                  f"set {name} explicitly")
        ports = {"port": self.port, "peer_port": self.effective_peer_port, "http_port": self.effective_http_port}
        if len(set(ports.values())) < 3:
            raise ConfigError(f"port, peer_port, http_port: must be three different ports, got {ports}")
        if self.fsync not in FSYNC_POLICIES:
            raise ConfigError(f"fsync: must be one of {', '.join(FSYNC_POLICIES)}, got {self.fsync!r}")
        if self.fsync_writer not in ("inline", "thread"):
            raise ConfigError(f"fsync_writer: must be inline or thread, got {self.fsync_writer!r}")
        for name in ("segment_bytes", "max_bulk_len", "max_multibulk_len", "max_inline_len", "max_clients"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise ConfigError(f"{name}: must be a positive integer, got {v!r}")
        for name in ("snapshot_every_records", "log_retention_bytes", "active_expire_hz", "apply_delay_ms",
                     "max_lag_ms"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ConfigError(f"{name}: must be a non-negative integer, got {v!r}")
        if not isinstance(self.node_id, int) or isinstance(self.node_id, bool) or self.node_id < 1:
            raise ConfigError(f"node_id: must be a positive integer, got {self.node_id!r}")
        if self.log_level not in LOG_LEVELS:
            raise ConfigError(f"log_level: must be debug, info, warning or error, got {self.log_level!r}")
        if not self.data_dir:
            raise ConfigError("data_dir: must not be empty")
        if not self.host:
            raise ConfigError("host: must not be empty")

    @property
    def effective_peer_port(self) -> int:
        return self.peer_port or self.port + 10000

    @property
    def effective_http_port(self) -> int:
        return self.http_port or self.port + 20000

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("extra", None)
        return d


FIELDS = {f.name: f for f in dataclasses.fields(NodeConfig) if f.name != "extra"}


def normalise_key(k: str) -> str:
    return k.strip().lower().replace("-", "_")


def _field_type(name: str) -> type:
    t = FIELDS[name].type
    return t if isinstance(t, type) else {"int": int, "str": str, "bool": bool}.get(str(t), str)


# byte counts may be written with a unit: "64mb", "512kb", "1gb"
SIZE_FIELDS = ("segment_bytes", "log_retention_bytes", "max_bulk_len", "max_inline_len")


def coerce(name: str, value):
    """Convert a string (flag, CONFIG SET) to the field's type, or raise ConfigError."""
    if name not in FIELDS:
        raise ConfigError(f"{name}: unknown setting")
    if _field_type(name) is int:
        if isinstance(value, bool):
            raise ConfigError(f"{name}: must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        s = str(value).strip().lower()
        mult = 1
        for suffix, m in (("kb", 1024), ("mb", 1024**2), ("gb", 1024**3), ("k", 1000), ("m", 1000**2)):
            if s.endswith(suffix):
                s, mult = s[: -len(suffix)], m
                break
        try:
            return int(s) * mult
        except ValueError:
            raise ConfigError(f"{name}: must be an integer, got {value!r}") from None
    return str(value)


_TOML_TYPE_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "a boolean", list: "an array",
                    dict: "a table"}


def _from_toml(name: str, value, where: str):
    """A TOML value must already have the field's type (a byte size may be a string with a
    unit, ``"64mb"``): ``port = "7000"`` or ``fsync = 1`` is a mistake worth naming."""
    want = _field_type(name)
    got = _TOML_TYPE_NAMES.get(type(value), type(value).__name__)
    if want is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and name in SIZE_FIELDS:
            return coerce(name, value)
        raise ConfigError(f"{name}: must be an integer in {where}, got {got} ({value!r})")
    if not isinstance(value, want):
        raise ConfigError(f"{name}: must be {_TOML_TYPE_NAMES.get(want, want.__name__)} in {where}, "
                          f"got {got} ({value!r})")
    return value


def _read_toml(path: str) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path}: not found") from None
    except IsADirectoryError:
        raise ConfigError(f"config file {path}: is a directory") from None
    except OSError as e:
        raise ConfigError(f"config file {path}: cannot be read ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path}: not valid TOML (not UTF-8 text: {e.reason} at byte {e.start})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"config file {path}: not valid TOML ({e})") from None


def load(path: str | None = None, overrides: dict | None = None) -> NodeConfig:
    """Build a config from a TOML file (optional) and overrides (flags); validate it.

    The file holds settings at the top level or in a ``[node]`` table (not both for one
    setting); any other key or table is refused, so a typo never silently falls back to a
    default."""
    values: dict = {}
    if path:
        raw = _read_toml(path)
        items = []
        for k, v in raw.items():
            if normalise_key(k) == "node":
                if not isinstance(v, dict):
                    raise ConfigError(f"node: must be a table ([node]) in {path}")
                items += [(f"node.{k2}", k2, v2) for k2, v2 in v.items()]
            else:
                items.append((k, k, v))
        for shown, k, v in items:
            name = normalise_key(k)
            if name not in FIELDS:
                what = "section" if isinstance(v, dict) else "setting"
                raise ConfigError(f"{shown}: unknown {what} in {path}")
            if name in values:
                raise ConfigError(f"{shown}: set twice in {path}")
            values[name] = _from_toml(name, v, path)
    for k, v in (overrides or {}).items():
        if v is None:
            continue
        name = normalise_key(k)
        values[name] = coerce(name, v)
    try:
        return NodeConfig(**values)
    except TypeError as e:
        raise ConfigError(str(e)) from None
