"""The configuration file: ``ct.get_config`` / ``ct.set_config`` and where the dispatcher is.

Sources, later wins: defaults (``localhost:48008``), ``$COVALENT_CONFIG_DIR/covalent.conf``
(default ``~/.config/covalent/covalent.conf``, TOML, section ``[dispatcher]`` with ``address``,
``port``, ``token``), then ``COVALENT_DISPATCHER_ADDR`` and ``COVALENT_TOKEN``. The file is read
on every call, so ``reload_config`` has nothing to do and exists for Covalent scripts. It holds
the token: it is written 0600 in a 0700 directory.
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import tomli_w

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 48008


def config_dir() -> Path:
    return Path(os.environ.get("COVALENT_CONFIG_DIR") or Path.home() / ".config" / "covalent")


def config_path() -> Path:
    return config_dir() / "covalent.conf"


class ConfigError(ValueError):
    """The config file cannot be read as a config (the CLI says so in one line)."""


class BadVariable(ConfigError):
    """A ``COVALENT_*`` environment variable that holds no valid setting."""


def read_config() -> dict[str, Any]:
    """The config file as a dict; empty when it does not exist."""
    try:
        with open(config_path(), "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{config_path()} is not valid TOML: {exc}") from exc


def write_config(config: dict[str, Any]) -> None:
    """Replace the config file atomically; it holds the token, so only its owner can read it
    (file 0600, directory 0700)."""
    path = config_path()
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".covalent.conf.", dir=path.parent)  # created 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            tomli_w.dump(config, fh)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def update_config(section: str, values: dict[str, Any]) -> dict[str, Any]:
    """Merge ``values`` into ``[section]`` of the config file (None removes a key); return it."""
    config = read_config()
    table = dict(config.get(section) or {})
    for key, value in values.items():
        if value is None:
            table.pop(key, None)
        else:
            table[key] = value
    config[section] = table
    write_config(config)
    return config


DEFAULTS: dict[str, dict[str, Any]] = {
    "dispatcher": {"address": DEFAULT_HOST, "port": DEFAULT_PORT},
    "sdk": {"log_level": "warning", "enable_logging": "false"},
}

# ``[executors.<short name>]`` defaults of the executor plugins imported in this process (their
# ``_EXECUTOR_PLUGIN_DEFAULTS``), as Covalent adds them to its config: plugins read them back.
PLUGIN_DEFAULTS: dict[str, dict[str, Any]] = {}


def _defaults() -> dict[str, Any]:
    """DEFAULTS, plus the directories Covalent's config names (plugins read them at import)."""
    cache = str(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "covalent")
    extra = {"dispatcher": {"cache_dir": cache, "results_dir": str(Path(cache) / "results")},
             "executors": PLUGIN_DEFAULTS}
    return _merged(extra, DEFAULTS)


def get_config(entries: str | list[str] | None = None) -> Any:
    """The configuration (defaults, then the file): all of it, one dotted key's value, or a
    dict of several.

    Raises:
        KeyError: a key that is not set.
    """
    config = _merged(_defaults(), read_config())
    if entries is None or entries == []:
        return config
    if isinstance(entries, str):
        return _lookup(config, entries)
    if len(entries) == 1:
        return _lookup(config, entries[0])
    return {key: _lookup(config, key) for key in entries}


def set_config(new_config: str | dict[str, Any], new_value: Any = None) -> None:
    """Set one dotted key (``set_config("sdk.log_level", "debug")``) or several (a dict), and
    write the file."""
    updates = {new_config: new_value} if isinstance(new_config, str) else dict(new_config)
    config = read_config()
    for key, value in updates.items():
        *path, leaf = str(key).split(".")
        table = config
        for part in path:
            table = table.setdefault(part, {})
            if not isinstance(table, dict):
                raise ValueError(f"cannot set {key!r}: {part!r} is not a table")
        table[leaf] = value
    write_config(config)


def reload_config() -> None:
    """Read the file again (it is read on every use already)."""


def _lookup(config: dict[str, Any], key: str) -> Any:
    value: Any = config
    for part in key.split("."):
        if not isinstance(value, dict) or part not in value:
            raise KeyError(f"{key!r} is not set in {config_path()}")
        value = value[part]
    return value


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


@dataclass(frozen=True, slots=True)
class ClientConfig:
    """Where the SDK sends requests and the token it sends."""

    url: str
    token: str


def client_config(dispatcher_addr: str | None = None) -> ClientConfig:
    """Resolve the dispatcher URL (``dispatcher_addr`` wins over config and env)."""
    section = read_config().get("dispatcher", {})
    addr = dispatcher_addr or os.environ.get("COVALENT_DISPATCHER_ADDR")
    if not addr:
        host = str(section.get("address", DEFAULT_HOST))
        if host in ("0.0.0.0", "::", ""):
            host = DEFAULT_HOST
        port = section.get("port", DEFAULT_PORT)
        try:
            url = normalize_address(f"{host}:{int(port)}")
        except (TypeError, ValueError):
            raise ConfigError(f"{config_path()}: [dispatcher] address = {host!r}, port = "
                              f"{port!r} is no address (port: 1 to 65535)") from None
    else:
        try:
            url = normalize_address(addr)
        except ValueError:
            if dispatcher_addr:
                raise
            raise BadVariable(f"COVALENT_DISPATCHER_ADDR={addr!r} is no address: 'host:port' or "
                              "'http://host:port'") from None
    token = os.environ.get("COVALENT_TOKEN") or str(section.get("token", ""))
    return ClientConfig(url=url, token=token)


def normalize_address(addr: str) -> str:
    """``host:port`` or a URL -> ``http://host:port`` without a trailing slash.

    >>> normalize_address("localhost:48008"), normalize_address("http://127.0.0.1:1/")
    ('http://localhost:48008', 'http://127.0.0.1:1')
    >>> normalize_address("not a url")
    Traceback (most recent call last):
    ...
    ValueError: dispatcher_addr must be 'host:port' or 'http://host:port', got 'not a url'
    >>> normalize_address("http://")
    Traceback (most recent call last):
    ...
    ValueError: dispatcher_addr must be 'host:port' or 'http://host:port', got 'http://'
    """
    bad = ValueError(f"dispatcher_addr must be 'host:port' or 'http://host:port', got {addr!r}")
    if not isinstance(addr, str) or not addr.strip() or addr.strip().endswith("://"):
        raise bad
    addr = addr.strip().rstrip("/")
    if "://" not in addr:
        addr = "http://" + addr
    try:
        parts = urlsplit(addr)
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number)
    except ValueError:
        raise bad from None
    if not parts.hostname or any(c.isspace() or ord(c) < 32 for c in addr):
        raise bad
    return addr
