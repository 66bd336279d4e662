"""Read the SDK's configuration: the dispatcher address and token, per call.

Sources, later wins: defaults (``localhost:48008``), ``$COVALENT_CONFIG_DIR/covalent.conf``
(default ``~/.config/covalent/covalent.conf``, TOML, section ``[dispatcher]`` with ``address``,
``port``, ``token``), then ``COVALENT_DISPATCHER_ADDR`` and ``COVALENT_TOKEN``.
"""

from __future__ import annotations

import os
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import tomli_w

DEFAULT_HOST = "localhost"
DEFAULT_PORT = 48008


def config_dir() -> Path:
    return Path(os.environ.get("COVALENT_CONFIG_DIR") or Path.home() / ".config" / "covalent")


def config_path() -> Path:
    return config_dir() / "covalent.conf"


def read_config() -> dict[str, Any]:
    """The config file as a dict; empty when it does not exist."""
    try:
        with open(config_path(), "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise ValueError(f"{config_path()} is not valid TOML: {exc}") from exc


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
        addr = f"{host}:{int(section.get('port', DEFAULT_PORT))}"
    token = os.environ.get("COVALENT_TOKEN") or str(section.get("token", ""))
    return ClientConfig(url=normalize_address(addr), token=token)


def normalize_address(addr: str) -> str:
    """``host:port`` or a URL -> ``http://host:port`` without a trailing slash.

    >>> normalize_address("localhost:48008"), normalize_address("http://127.0.0.1:1/")
    ('http://localhost:48008', 'http://127.0.0.1:1')
    """
    if not isinstance(addr, str) or not addr.strip():
        raise ValueError(f"dispatcher_addr must be 'host:port' or a URL, got {addr!r}")
    addr = addr.strip().rstrip("/")
    if "://" not in addr:
        addr = "http://" + addr
    return addr
