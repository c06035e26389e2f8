"""C2SP signed notes (c2sp.org/signed-note), checkpoints (c2sp.org/tlog-checkpoint) and Ed25519
cosignatures (c2sp.org/tlog-cosignature, ``cosignature/v1``). Pure: no I/O, no database.

A checkpoint Entente signs::

    entente.example/audit                      origin: the log's identity, also its key name
    4213                                       tree size (RFC 9162 §2.1: number of leaves)
    3w0b9mE7…=                                 base64 root hash, MTH of those leaves
    time 1764000000                            extension line: POSIX seconds when it was signed
                                               blank line
    — entente.example/audit AbCd…              Ed25519 (type 0x01) signature over the four lines above

Partners add lines of the same form (type 0x04, a timestamped cosignature); clients ignore
signatures from keys they do not know, so one note carries them all. The ``time`` line is an
extension line (permitted, signed, but opaque to generic monitors): it is how the log signs *when*.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from broker.audit.errors import BadSignature, MalformedExport
from broker.audit.merkle import HASH_SIZE

__all__ = [
    "ED25519",
    "ED25519_COSIGNATURE",
    "Checkpoint",
    "NoteSignature",
    "VerifierKey",
    "cosign",
    "cosignature_message",
    "open_note",
    "sign_note",
    "split_note",
    "verify_cosignature",
]

ED25519 = 0x01
"""signed-note signature type of a plain Ed25519 signature (the log's own)."""
ED25519_COSIGNATURE = 0x04
"""tlog-cosignature type of a timestamped Ed25519 cosignature (a partner's)."""
MAX_SIGNATURES = 100
_NAME = re.compile(r"^[^\s+]+$")
_SIZE = re.compile(r"^(0|[1-9][0-9]*)$")
_DASH = "\u2014 "


def _b64decode(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadSignature(f"{what} is not base64") from exc


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class VerifierKey:
    """A trusted key: name, signature type and raw Ed25519 public key; text form ``name+hexid+base64``."""

    name: str
    kind: int
    public_key: bytes

    def __post_init__(self) -> None:
        if not _NAME.match(self.name):
            raise BadSignature(f"key name {self.name!r} is empty or holds a space or '+'")
        if self.kind not in (ED25519, ED25519_COSIGNATURE) or len(self.public_key) != 32:
            raise BadSignature("only 32-byte Ed25519 keys of type 0x01 or 0x04 are supported")

    @property
    def key_id(self) -> bytes:
        """signed-note: SHA-256(name || 0x0A || type || public key)[:4]."""
        return hashlib.sha256(self.name.encode() + b"\n" + bytes([self.kind]) + self.public_key).digest()[:4]

    def encode(self) -> str:
        material = base64.b64encode(bytes([self.kind]) + self.public_key).decode()
        return f"{self.name}+{self.key_id.hex()}+{material}"

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        """Read ``<name>+<8 hex key id>+<base64(type || key)>``; the key id must match the key."""
        parts = text.strip().split("+", 2)
        if len(parts) != 3 or not re.fullmatch(r"[0-9a-fA-F]{8}", parts[1]):
            raise BadSignature("a verifier key reads <name>+<8 hex digits>+<base64 key>")
        material = _b64decode(parts[2], "the verifier key")
        if not material:
            raise BadSignature("the verifier key holds no key")
        key = cls(parts[0], material[0], material[1:])
        if key.key_id.hex() != parts[1].lower():
            raise BadSignature(f"verifier key {parts[0]}: key id {parts[1]} does not match its key")
        return key

    def verifier(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.public_key)


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: ``— <name> base64(key id || signature)``."""

    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        return f"{_DASH}{self.name} {base64.b64encode(self.key_id + self.signature).decode()}\n"

    @classmethod
    def parse(cls, line: str) -> NoteSignature:
        if not line.startswith(_DASH):
            raise BadSignature("a signature line starts with an em dash and a space")
        name, _, blob = line[len(_DASH) :].rstrip("\n").partition(" ")
        raw = _b64decode(blob, f"the signature of {name}")
        if not _NAME.match(name) or len(raw) < 5:
            raise BadSignature(f"malformed signature line for {name!r}")
        return cls(name, raw[:4], raw[4:])


def split_note(note: str) -> tuple[str, list[NoteSignature]]:
    """The signed text (with its final newline) and the signature lines after the last blank line."""
    if any(ord(c) < 0x20 and c != "\n" for c in note):
        raise BadSignature("a signed note holds no control characters but newlines")
    text, separator, signatures = note.rpartition("\n\n")
    if not separator or not signatures.endswith("\n"):
        raise BadSignature("not a signed note: a text, a blank line, then signature lines")
    lines = signatures[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise BadSignature(f"more than {MAX_SIGNATURES} signatures")
    return text + "\n", [NoteSignature.parse(line) for line in lines]


def sign_note(text: str, name: str, key: Ed25519PrivateKey) -> str:
    """A note of ``text`` with one Ed25519 (type 0x01) signature by ``name``."""
    vkey = VerifierKey(name, ED25519, raw_public_key(key.public_key()))
    return text + "\n" + NoteSignature(name, vkey.key_id, key.sign(text.encode())).line()


def open_note(note: str, key: VerifierKey) -> str:
    """The note's text if ``key`` (type 0x01) signed it; other signers' lines are ignored (signed-note)."""
    text, signatures = split_note(note)
    mine = [s for s in signatures if s.name == key.name and s.key_id == key.key_id]
    if not mine:
        raise BadSignature(f"the note carries no signature by {key.name} ({key.key_id.hex()})")
    try:
        for signature in mine:
            key.verifier().verify(signature.signature, text.encode())
    except InvalidSignature as exc:
        raise BadSignature(f"the signature by {key.name} does not verify: the note was altered") from exc
    return text


def cosignature_message(text: str, timestamp: int) -> bytes:
    """tlog-cosignature ``cosignature/v1``: the header line, the time line, then the checkpoint text."""
    return f"cosignature/v1\ntime {timestamp}\n{text}".encode()


def cosign(text: str, name: str, key: Ed25519PrivateKey, timestamp: int) -> NoteSignature:
    """A timestamped Ed25519 cosignature (type 0x04) of a checkpoint text."""
    vkey = VerifierKey(name, ED25519_COSIGNATURE, raw_public_key(key.public_key()))
    signature = key.sign(cosignature_message(text, timestamp))
    return NoteSignature(name, vkey.key_id, struct.pack(">Q", timestamp) + signature)


def verify_cosignature(text: str, signature: NoteSignature, key: VerifierKey) -> int:
    """The cosignature's POSIX timestamp if ``key`` (type 0x04) made it over ``text``, else BadSignature."""
    if key.kind != ED25519_COSIGNATURE or (signature.name, signature.key_id) != (key.name, key.key_id):
        raise BadSignature(f"the cosignature is not by {key.name} ({key.key_id.hex()})")
    if len(signature.signature) != 8 + 64:
        raise BadSignature("a cosignature is an 8-byte timestamp and a 64-byte Ed25519 signature")
    (timestamp,) = struct.unpack(">Q", signature.signature[:8])
    if timestamp >= 2**63:
        raise BadSignature("the cosignature's timestamp is out of range")
    try:
        key.verifier().verify(signature.signature[8:], cosignature_message(text, timestamp))
    except InvalidSignature as exc:
        raise BadSignature(f"the cosignature by {key.name} does not verify over this checkpoint") from exc
    return int(timestamp)


@dataclass(frozen=True)
class Checkpoint:
    """A tlog-checkpoint note text: origin, tree size, root hash, and Entente's ``time`` extension line."""

    origin: str
    tree_size: int
    root_hash: bytes
    timestamp: int | None = None
    """POSIX seconds at signing, from the ``time <n>`` extension line; ``None`` if the note has none."""

    def text(self) -> str:
        lines = [self.origin, str(self.tree_size), base64.b64encode(self.root_hash).decode()]
        if self.timestamp is not None:
            lines.append(f"time {self.timestamp}")
        return "\n".join(lines) + "\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        """Read a checkpoint text (already verified: ``open_note``). Unknown extension lines are ignored."""
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "" or any(not line for line in lines[:-1]):
            raise MalformedExport("a checkpoint is at least three non-empty lines, each ending in a newline")
        origin, size, root, *extensions = lines[:-1]
        if not _SIZE.match(size):
            raise MalformedExport(f"checkpoint tree size {size!r} is not a decimal number")
        try:
            root_hash = base64.b64decode(root, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise MalformedExport("checkpoint root hash is not base64") from exc
        if len(root_hash) != HASH_SIZE:
            raise MalformedExport(f"checkpoint root hash is {len(root_hash)} bytes, not {HASH_SIZE}")
        times = [e.removeprefix("time ") for e in extensions if e.startswith("time ")]
        if times and not _SIZE.match(times[0]):
            raise MalformedExport(f"checkpoint time {times[0]!r} is not a decimal number")
        return cls(origin, int(size), root_hash, int(times[0]) if times else None)
