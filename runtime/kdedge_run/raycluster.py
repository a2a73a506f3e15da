"""Joining a Ray cluster the way `ray start` sets it up today (used by `kdedge-run label` and `kdedge cv`).

Ray 2.59+ turns token authentication on for clusters started with `ray start --head`, but a client only sends
the token when its own environment says `RAY_AUTH_MODE=token` ("Unauthenticated: InvalidAuthToken" otherwise).
So when joining an existing cluster (an address, or RAY_ADDRESS) with RAY_AUTH_MODE unset, and a token is at
hand (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or Ray's default file ~/.ray/auth_token, which `ray start` writes on
the head), the token is sent; a cluster without authentication accepts that too. Set RAY_AUTH_MODE yourself to
decide otherwise. Ray imports stay with the caller.
"""
from __future__ import annotations

import os
from pathlib import Path

DEFAULT_TOKEN = Path("~/.ray/auth_token")


class RayConnectError(ConnectionError):
    """The cluster could not be joined or started; one line that says what to check."""


def token_available() -> bool:
    """Whether Ray would find an authentication token (its precedence: variable, file variable, default file)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    return Path(path).expanduser().is_file() if path else DEFAULT_TOKEN.expanduser().is_file()


def failure_line(exc: BaseException) -> str:
    """A Ray exception's last meaningful line (no Ray boilerplate), or the cause's own message."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, Exception) and not type(cause).__module__.startswith("ray"):
        return f"{type(cause).__name__}: {cause}"
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return lines[-1] if lines else type(exc).__name__


PROBE_SECONDS = 5.0


def _probe(address: str) -> None:
    """For a plain `host:port`, check that something answers there: Ray itself keeps retrying a dead address
    for minutes. `auto`, `local` and `ray://` addresses are left to Ray."""
    import socket

    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_SECONDS).close()
    except OSError as exc:
        raise RayConnectError(f"cannot join the Ray cluster at {address}: nothing answers there ({exc.strerror or exc}); "
                              "is `ray start --head` running there and reachable?") from None


def connect(ray, address: str | None) -> None:
    """`ray.init` unless already initialised: join `address` (or RAY_ADDRESS), else start a local instance;
    RayConnectError with one line when that fails."""
    if ray.is_initialized():
        return
    joining = address or os.environ.get("RAY_ADDRESS")
    if joining:
        _probe(joining)
    if joining and "RAY_AUTH_MODE" not in os.environ and token_available():
        os.environ["RAY_AUTH_MODE"] = "token"
        try:  # Ray read its settings when imported: read them again (what Ray's own authentication tests do)
            from ray._raylet import Config

            Config.initialize("")
        except (ImportError, AttributeError):  # another Ray: it reads the variable when it connects, or fails below
            pass
    try:
        ray.init(address=address, log_to_driver=False)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ValueError and its own types here
        where = f"the Ray cluster at {joining}" if joining else "a local Ray instance"
        hint = (" (is `ray start --head` running there and reachable? a head with token authentication needs "
                "its token here: RAY_AUTH_TOKEN, or a copy of the head's ~/.ray/auth_token)") if joining else ""
        raise RayConnectError(f"cannot join {where}: {failure_line(exc)}{hint}") from None
