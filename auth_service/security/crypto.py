"""Key material: signing key generation and encryption of private keys at rest."""

import base64
import contextlib
import errno
import hashlib
import math
import os
import secrets
import stat
import string
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

RSA_KEY_SIZE = 2048
_NONCE_BYTES = 12
# HKDF info of each purpose of AUTH_SECRET_KEY.
_SIGNING_KEYS = b"auth-service signing-key encryption v1"
REFRESH_SUCCESSORS = b"auth-service refresh-successor encryption v1"
# The alphabets generated secrets are drawn from, smallest first; the last one stands for
# anything else too, which only makes the estimate lower.
_ALPHABETS = tuple(
    frozenset(a)
    for a in (
        string.digits,
        string.digits + "abcdef",
        string.digits + "ABCDEF",
        string.ascii_lowercase,
        string.ascii_uppercase,
        string.ascii_lowercase + string.digits,
        string.ascii_uppercase + string.digits,
        string.ascii_letters,
        string.ascii_letters + string.digits,
        string.ascii_letters + string.digits + "-_=",  # base64url (RFC 4648 §5)
        string.ascii_letters + string.digits + "+/=",  # base64 (RFC 4648 §4)
        string.printable[:95],  # printable ASCII, space included
    )
)


def generate_private_key(alg: str) -> PrivateKey:
    if alg == "RS256":
        return rsa.generate_private_key(public_exponent=65537, key_size=RSA_KEY_SIZE)
    if alg == "ES256":
        return ec.generate_private_key(ec.SECP256R1())
    raise ValueError(f"unsupported signing algorithm {alg}")


def private_key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def new_kid(key: PrivateKey) -> str:
    """A key id derived from the public key (stable, unique, reveals nothing)."""
    der = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()[:16]).rstrip(b"=").decode()


class Sealer:
    """AES-256-GCM under a key derived from AUTH_SECRET_KEY for one purpose (the HKDF info),
    so that what is sealed for one purpose cannot be opened as another's."""

    def __init__(self, secret_key: str, *, purpose: bytes) -> None:
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose)
        self._aead = AESGCM(hkdf.derive(secret_key.encode()))

    def seal(self, plaintext: bytes, *, associated: bytes) -> bytes:
        """Nonce and ciphertext; `associated` is authenticated, not stored."""
        nonce = os.urandom(_NONCE_BYTES)
        return nonce + self._aead.encrypt(nonce, plaintext, associated)

    def open(self, blob: bytes, *, associated: bytes) -> bytes:
        """The plaintext; raises cryptography's InvalidTag under another key or association."""
        nonce, ciphertext = blob[:_NONCE_BYTES], blob[_NONCE_BYTES:]
        return self._aead.decrypt(nonce, ciphertext, associated)


def encrypt_private_key(key: PrivateKey, *, secret_key: str, kid: str) -> bytes:
    """AES-256-GCM over the PKCS#8 PEM; the kid is bound as associated data."""
    sealer = Sealer(secret_key, purpose=_SIGNING_KEYS)
    return sealer.seal(private_key_pem(key), associated=kid.encode())


def decrypt_private_key(blob: bytes, *, secret_key: str, kid: str) -> bytes:
    """The PKCS#8 PEM; raises cryptography's InvalidTag under a wrong secret key."""
    return Sealer(secret_key, purpose=_SIGNING_KEYS).open(blob, associated=kid.encode())


def estimate_entropy_bits(value: str) -> float:
    """A simple, deliberately conservative estimate of how many random bits `value` holds.

    Characters that count: the first, then each one that neither forms a pair with its
    predecessor seen earlier in the value (repeats and cycles: `s` x 48, `abcd` x 12) nor
    continues the step between the two before it (sequences: `abcdef`, `13579`). Each
    counts log2 of the smallest common alphabet holding every character of the value
    (digits, hexadecimal, base64...), so 32 random bytes in any usual encoding score well
    over 128 bits. Words are not recognised: generate a key, do not compose one.
    """
    size = next((len(a) for a in _ALPHABETS if set(value) <= a), len(_ALPHABETS[-1]))
    counted = 1 if value else 0
    seen: set[str] = set()
    for i in range(1, len(value)):
        pair = value[i - 1 : i + 1]
        step = ord(value[i]) - ord(value[i - 1])
        if pair not in seen and (i < 2 or step != ord(value[i - 1]) - ord(value[i - 2])):
            counted += 1
        seen.add(pair)
    return counted * math.log2(size)


def load_or_create_secret_key(path: Path, *, create: bool = True) -> tuple[str, int]:
    """The key in `path` and the file's permission bits; with `create`, a missing file is
    created first, holding a new random key (mode 0600).

    A symbolic link at `path` is refused, not followed: whoever can plant one could make
    the service use a key they know, or write its key where they can read it.
    """
    if create and not os.path.lexists(path):
        _create_secret_key_file(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise ValueError(
                f"secret key file {path} is a symbolic link: name the file itself"
            ) from None
        raise
    with os.fdopen(fd) as handle:
        mode = os.fstat(handle.fileno()).st_mode
        if not stat.S_ISREG(mode):
            raise ValueError(f"secret key file {path} is not a regular file")
        value = handle.read().strip()
    if not value:
        raise ValueError(f"secret key file {path} is empty")
    return value, stat.S_IMODE(mode)


def _create_secret_key_file(path: Path) -> None:
    """Write a new key under a fresh name, then hard-link it to `path`.

    O_EXCL | O_NOFOLLOW: nothing planted at the fresh name is followed or reused. link(2)
    never replaces or follows what is at `path`, so concurrent first starts agree on one
    value (the first link wins) and nobody reads a half-written file.
    """
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        with contextlib.suppress(FileExistsError):  # another process won: use its key
            os.link(temporary, path)
    finally:
        temporary.unlink()
