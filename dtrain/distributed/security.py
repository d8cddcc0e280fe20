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
from dataclasses import dataclass, field

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

log = logging.getLogger("dtrain.security")

ENV_SERVER_KEY = "DTRAIN_CURVE_SERVERKEY"
ENV_PUBLIC_KEY = "DTRAIN_CURVE_PUBLICKEY"
ENV_SECRET_KEY = "DTRAIN_CURVE_SECRETKEY"
ZAP_DOMAIN = "dtrain"


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
        values = [env.get(k) for k in (ENV_PUBLIC_KEY, ENV_SECRET_KEY, ENV_SERVER_KEY)]
        if not any(values):
            return None
        if not all(values):
            raise SecurityError(f"set all of {ENV_SERVER_KEY}, {ENV_PUBLIC_KEY} and "
                                f"{ENV_SECRET_KEY}, or none")
        return cls(*(v.encode() for v in values))


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


def _read_pair(path: str, what: str) -> tuple[bytes, bytes]:
    if not os.path.isfile(path):
        raise SecurityError(f"{what}: no secret key file {path} (create one with dtrain keygen)")
    public, secret = zmq.auth.load_certificate(path)
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
            key, _ = zmq.auth.load_certificate(os.path.join(allow_dir, name))
            allowed.add(key)
    if not allowed:
        raise SecurityError(f"no worker public keys (*.key) in {allow_dir}: nobody could join")
    return ServerKeys(public, secret, allowed)


def client_keys_from_dir(directory: str, name: str = "worker") -> ClientKeys:
    """``NAME.key_secret`` and the coordinator's ``coordinator.key`` from ``directory``."""
    public, secret = _read_pair(os.path.join(directory, f"{name}.key_secret"), "worker")
    server_file = os.path.join(directory, "coordinator.key")
    if not os.path.isfile(server_file):
        raise SecurityError(f"worker: no coordinator public key {server_file}")
    server, _ = zmq.auth.load_certificate(server_file)
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
    """Run the ZAP handler that enforces the allow-list (stop it with ``.stop()``)."""
    auth = ThreadAuthenticator(ctx, log=logging.getLogger("dtrain.zap"))
    auth.start()
    auth.configure_curve_callback(ZAP_DOMAIN, credentials_provider=_AllowList(keys.allowed))
    return auth


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
