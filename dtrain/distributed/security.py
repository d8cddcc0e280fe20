"""CURVE encryption and authentication for every coordinator/worker socket.

The coordinator is a CURVE server with its own key pair; it admits only clients whose public
key is on its allow-list (checked by a ZAP handler, pyzmq's ``zmq.auth``), so a peer without a
key, or with a key not on the list, never completes the handshake and cannot read parameters.
``dtrain keygen DIR`` writes key pairs in zmq.auth's certificate format; local runs make
ephemeral keys and hand the workers theirs through the environment.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field

import zmq
import zmq.auth
import zmq.utils.z85
from zmq.auth.thread import ThreadAuthenticator

from ..process import raise_fd_limit

log = logging.getLogger("dtrain.security")

ENV_SERVER_KEY = "DTRAIN_CURVE_SERVERKEY"
ENV_PUBLIC_KEY = "DTRAIN_CURVE_PUBLICKEY"
ENV_SECRET_KEY = "DTRAIN_CURVE_SECRETKEY"
ZAP_DOMAIN = "dtrain"
ZAP_REBIND_SECONDS = 2.0  # how long a new ZAP handler waits for a stopped one's address


class SecurityError(RuntimeError):
    """Keys are missing, unreadable or inconsistent."""


@dataclass
class ServerKeys:
    """The coordinator's key pair and the public keys of the workers it accepts."""

    public: bytes
    secret: bytes
    allowed: set = field(default_factory=set)  # z85 public keys


@dataclass
class ClientKeys:
    """A worker's key pair and the coordinator's public key it expects."""

    public: bytes
    secret: bytes
    server: bytes

    def env(self) -> dict:
        """Environment variables that carry these keys to a local worker process."""
        return {ENV_SERVER_KEY: self.server.decode(), ENV_PUBLIC_KEY: self.public.decode(),
                ENV_SECRET_KEY: self.secret.decode()}

    @classmethod
    def from_env(cls, env=os.environ) -> ClientKeys | None:
        """The keys in DTRAIN_CURVE_* variables (None when none is set); SecurityError names a
        missing or malformed one."""
        names = (ENV_PUBLIC_KEY, ENV_SECRET_KEY, ENV_SERVER_KEY)
        values = [env.get(k) for k in names]
        if not any(values):
            return None
        if not all(values):
            missing = ", ".join(n for n, v in zip(names, values) if not v)
            raise SecurityError(f"{missing} not set: set all of {ENV_SERVER_KEY}, "
                                f"{ENV_PUBLIC_KEY} and {ENV_SECRET_KEY}, or none")
        return cls(*(z85_key(v, n) for v, n in zip(values, names)))


def z85_key(value, what: str) -> bytes:
    """``value`` as a CURVE key (40 Z85 characters); SecurityError naming ``what`` otherwise."""
    raw = value.encode("ascii", "replace") if isinstance(value, str) else bytes(value)
    raw = raw.strip()
    try:
        ok = len(raw) == 40 and len(zmq.utils.z85.decode(raw)) == 32
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise SecurityError(f"{what} is not a CURVE key (40 Z85 characters, as dtrain keygen "
                            "writes)")
    return raw


def ephemeral_pair() -> tuple[ServerKeys, ClientKeys]:
    """Fresh keys for one local run: the server accepts exactly the one client key."""
    server_public, server_secret = zmq.curve_keypair()
    client_public, client_secret = zmq.curve_keypair()
    return (ServerKeys(server_public, server_secret, {client_public}),
            ClientKeys(client_public, client_secret, server_public))


def keygen(directory: str, names=("coordinator", "worker")) -> list[str]:
    """Write ``NAME.key`` (public) and ``NAME.key_secret`` (mode 0600) for each name."""
    os.makedirs(directory, exist_ok=True)
    written = []
    for name in names:
        public, secret = zmq.auth.create_certificates(directory, name)
        os.chmod(secret, 0o600)
        written += [public, secret]
    return written


def load_key_file(path: str, what: str) -> tuple[bytes, bytes | None]:
    """(public, secret or None) from a certificate file; SecurityError names a missing,
    empty, unreadable or malformed file."""
    if os.path.isdir(path):
        raise SecurityError(f"{what}: {path} is a directory, not a key file (dtrain keygen "
                            "writes NAME.key and NAME.key_secret)")
    if not os.path.isfile(path):
        raise SecurityError(f"{what}: no key file {path} (create one with dtrain keygen)")
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise SecurityError(f"{what}: {path} is not a key file written by dtrain keygen "
                            f"({e})") from None
    public = z85_key(public, f"{what}: the public key in {path}")
    if secret is not None:
        secret = z85_key(secret, f"{what}: the secret key in {path}")
    return public, secret


def _read_pair(path: str, what: str) -> tuple[bytes, bytes]:
    public, secret = load_key_file(path, what)
    if secret is None:
        raise SecurityError(f"{what}: {path} holds no secret key")
    return public, secret


def server_keys_from_dir(directory: str, allow_dir: str | None = None) -> ServerKeys:
    """coordinator.key_secret from ``directory``; allowed workers' public keys from ``allow_dir``
    (default: the ``*.key`` files of ``directory`` other than the coordinator's own)."""
    public, secret = _read_pair(os.path.join(directory, "coordinator.key_secret"), "coordinator")
    allow_dir = allow_dir or directory
    allowed = set()
    for name in sorted(os.listdir(allow_dir)):
        if name.endswith(".key") and (allow_dir != directory or name != "coordinator.key"):
            key, _ = load_key_file(os.path.join(allow_dir, name), "allowed worker")
            allowed.add(key)
    if not allowed:
        raise SecurityError(f"no worker public keys (*.key) in {allow_dir}: nobody could join")
    return ServerKeys(public, secret, allowed)


def client_keys_from_dir(directory: str, name: str = "worker") -> ClientKeys:
    """``NAME.key_secret`` and the coordinator's ``coordinator.key`` from ``directory``."""
    public, secret = _read_pair(os.path.join(directory, f"{name}.key_secret"), "worker")
    server, _ = load_key_file(os.path.join(directory, "coordinator.key"),
                              "worker: the coordinator's public key")
    return ClientKeys(public, secret, server)


class _AllowList:
    """ZAP callback: admit a CURVE client only when its public key is allowed."""

    def __init__(self, allowed: set):
        self.allowed = {bytes(k) for k in allowed}

    def callback(self, domain: str, key: bytes) -> bool:
        key = bytes(key)
        key = key if len(key) == 40 else zmq.utils.z85.encode(key)
        ok = key in self.allowed
        if not ok:
            log.warning("refused a CURVE client: its public key %s is not in the coordinator's "
                        "allow-list; put its NAME.key file in the --keys (or --allow) directory "
                        "and restart the coordinator, or give the worker a listed key pair",
                        key.decode(errors="replace"))
        return ok


REJECTED = ("rejected: this worker's key is not in the coordinator's allow-list; put this "
            "worker's public key (NAME.key) in the coordinator's --keys or --allow directory, "
            "or start the worker with --keys of a listed key pair")
HANDSHAKE_FAILED = ("the CURVE handshake with the coordinator failed: the coordinator's public "
                    "key given to this worker (coordinator.key in --keys, or "
                    f"{ENV_SERVER_KEY}) is probably not the coordinator's")


class HandshakeWatch:
    """Watches a client socket's monitor for failed CURVE handshakes and says why they failed.

    Without it a rejected worker only sees silence and reconnects forever.
    """

    EVENTS = zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL \
        | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL | zmq.EVENT_HANDSHAKE_SUCCEEDED

    def __init__(self, sock: zmq.Socket):
        self.sock = sock
        self.monitor = sock.get_monitor_socket(self.EVENTS)
        self.reported = False

    def failure(self) -> tuple[bool, str] | None:
        """(fatal, message) for a failed handshake since the last call, else None."""
        from zmq.utils.monitor import recv_monitor_message

        found = None
        while self.monitor.poll(0):
            event = recv_monitor_message(self.monitor)["event"]
            if event == zmq.EVENT_HANDSHAKE_FAILED_AUTH:
                found = (True, REJECTED)
            elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                found, self.reported = None, False
            elif found is None and not self.reported:
                found = (False, HANDSHAKE_FAILED)
        if found is not None and not found[0]:
            self.reported = True  # said once per connection, not at every retry
        return found

    def close(self) -> None:
        """Stop monitoring (before the socket closes)."""
        try:
            self.sock.disable_monitor()
        except zmq.ZMQError:
            pass
        self.monitor.close(0)


def start_authenticator(ctx: zmq.Context, keys: ServerKeys) -> ThreadAuthenticator:
    """Run the ZAP handler that enforces the allow-list (stop it with ``.stop()``).

    A handler just stopped on the same context (a worker restarting its reducer when it
    rejoins) releases the ZAP address only once ZeroMQ's reaper thread has closed its socket,
    a moment later: until then the bind is retried, rather than the worker failing.
    """
    deadline = time.monotonic() + ZAP_REBIND_SECONDS
    while True:
        auth = ThreadAuthenticator(ctx, log=logging.getLogger("dtrain.zap"))
        try:
            auth.start()
            break
        except zmq.ZMQError as e:
            auth.stop()  # closes the ZAP socket it made
            if e.errno != zmq.EADDRINUSE or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    auth.configure_curve_callback(ZAP_DOMAIN, credentials_provider=_AllowList(keys.allowed))
    return auth


HANDSHAKE_SECONDS = 5.0  # a connection still in its handshake is dropped then (ZeroMQ: 30 s)
# Connections the kernel may hold for a listener to accept (capped by net.core.somaxconn,
# 4096 by default since Linux 5.4). ZeroMQ's 100 let a burst of a few hundred connects overflow
# the queue: the kernel then drops SYNs and final ACKs, and a worker reconnecting behind an
# outsider's burst waits seconds of TCP retries, or holds a connection never accepted, until
# its first bytes are answered with a reset.
LISTEN_BACKLOG = 4096


def harden_listener(sock: zmq.Socket) -> None:
    """Set a listening socket against a flood of idle connections (before it binds): those
    that never finish their handshake are dropped after HANDSHAKE_SECONDS, a burst of
    connects does not overflow the kernel's accept queue, and the process's open-file limit
    is raised (``process.raise_fd_limit``), so held connections cannot starve its files."""
    sock.setsockopt(zmq.HANDSHAKE_IVL, int(HANDSHAKE_SECONDS * 1000))
    sock.setsockopt(zmq.BACKLOG, LISTEN_BACKLOG)
    raise_fd_limit()


def make_server(sock: zmq.Socket, keys: ServerKeys) -> None:
    """Turn a socket into a CURVE server under dtrain's ZAP domain (before bind)."""
    sock.zap_domain = ZAP_DOMAIN.encode()
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_server = True


def make_client(sock: zmq.Socket, keys: ClientKeys) -> None:
    """Turn a socket into a CURVE client of the given server (before connect)."""
    sock.curve_secretkey = keys.secret
    sock.curve_publickey = keys.public
    sock.curve_serverkey = keys.server


def allow_only(auth: ThreadAuthenticator, allowed) -> None:
    """Make a running authenticator admit exactly the CURVE public keys ``allowed`` (z85):
    a worker's reducer learns the job's keys from each range map."""
    auth.configure_curve_callback(ZAP_DOMAIN, credentials_provider=_AllowList(
        {k.encode() if isinstance(k, str) else bytes(k) for k in allowed}))
