"""A token issuer on loopback for the verifier to trust: metadata, a JWK Set, test keys."""

import functools
import json
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Annotated, Any

import httpx
from auth_service_verifier import TokenVerifier, VerifiedToken
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fastapi import Depends, FastAPI
from jwt.algorithms import RSAAlgorithm

from tests.helpers.forged_tokens import Signer

AUDIENCE = "orders-api"
GATE_SECONDS = 30.0


@functools.cache
def rsa_pem(n: int) -> bytes:
    """The `n`th test key: made once per run (a 2048-bit key takes a while)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_jwk(private_pem: bytes, kid: str, alg: str = "RS256") -> dict[str, Any]:
    private = serialization.load_pem_private_key(private_pem, password=None)
    jwk = json.loads(RSAAlgorithm.to_jwk(private.public_key()))  # type: ignore[arg-type]
    return {**jwk, "kid": kid, "alg": alg, "use": "sig"}


class Issuer:
    """An issuer on a free loopback port: metadata, a JWK Set, and what was asked of it."""

    def __init__(self) -> None:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.metadata_issuer: object = self.url  # what the metadata says the issuer is
        self.jwks_uri: object = self.url + "/jwks.json"  # what the metadata says it is
        self.keys: list[dict[str, Any]] = []
        self.cache_control = "public, max-age=300"
        self.jwks_status = 200
        self.jwks_body: bytes | None = None  # instead of the JWK Set: a broken document
        self.jwks_gate: threading.Event | None = None  # when set: JWK Sets wait for it
        self.jwks_drip: float | None = None  # when set: the JWK Set a byte per this many s
        self.drip_head = False  # with jwks_drip: its status line and headers dripped too
        self.stopped = threading.Event()
        self.jwks_requests = 0
        self.rotations: list[str] = []
        self.signer = self.rotate()
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()

    def rotate(self, *, keep: bool = True) -> Signer:
        """A new signing key, published (the earlier ones too, unless not `keep`)."""
        pem, kid = rsa_pem(len(self.rotations)), f"key-{uuid.uuid4().hex[:8]}"
        self.rotations.append(kid)
        self.keys = [*(self.keys if keep else []), public_jwk(pem, kid)]
        self.signer = Signer(pem, kid, self.url, AUDIENCE, "user-1")
        return self.signer

    def stop(self) -> None:
        self.stopped.set()
        self.server.shutdown()
        self.server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                headers = {"Cache-Control": issuer.cache_control}
                if self.path == "/.well-known/openid-configuration":
                    status, body = (
                        200,
                        {
                            "issuer": issuer.metadata_issuer,
                            "jwks_uri": issuer.jwks_uri,
                        },
                    )
                elif self.path == "/jwks.json":
                    issuer.jwks_requests += 1
                    if issuer.jwks_gate is not None:
                        issuer.jwks_gate.wait(GATE_SECONDS)  # a hung auth service, bounded
                    status, body = issuer.jwks_status, {"keys": issuer.keys}
                else:
                    status, body = 404, {}
                data = json.dumps(body).encode()
                if self.path == "/jwks.json" and issuer.jwks_body is not None:
                    data = issuer.jwks_body
                headers |= {"Content-Type": "application/json", "Content-Length": str(len(data))}
                head = f"{self.protocol_version} {status} {self.responses[status][0]}\r\n"
                head += "".join(f"{name}: {value}\r\n" for name, value in headers.items())
                answer = (head + "\r\n").encode() + data
                try:
                    if self.path == "/jwks.json" and issuer.jwks_drip is not None:
                        if not issuer.drip_head:
                            self.wfile.write(answer[: len(answer) - len(data)])
                            answer = data
                        for byte in answer:  # a drip-fed answer: each read is quick
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            if issuer.stopped.wait(issuer.jwks_drip):
                                return
                    self.wfile.write(answer)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the verifier gave up on a hung issuer, as it should

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler


class HugeBody:
    """64 MiB in 64 KiB chunks, produced as they are read: what was read of it is counted."""

    CHUNK = b" " * (64 << 10)

    def __init__(self) -> None:
        self.read = 0

    def chunks(self) -> Iterator[bytes]:
        for _ in range(1024):
            self.read += len(self.CHUNK)
            yield self.CHUNK

    async def achunks(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks():
            yield chunk


def verifier_for(issuer: Issuer, **options: Any) -> TokenVerifier:
    return TokenVerifier(issuer=issuer.url, audience=AUDIENCE, **{"timeout": 5, **options})


def downstream(verifier: TokenVerifier) -> httpx.AsyncClient:
    app = FastAPI()

    @app.get("/orders")
    async def orders(
        token: Annotated[VerifiedToken, Depends(verifier.require("orders:read"))],
    ) -> dict[str, str]:
        return {"owner": token.sub}

    @app.get("/anything")
    async def anything(token: Annotated[VerifiedToken, Depends(verifier.require())]) -> str:
        return token.sub

    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://orders.test")
