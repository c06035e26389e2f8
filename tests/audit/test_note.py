"""c2sp.org/signed-note, tlog-checkpoint and tlog-cosignature: the Go sumdb vector and round trips."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.audit.errors import BadSignature, MalformedExport
from broker.audit.note import (
    ED25519,
    ED25519_COSIGNATURE,
    Checkpoint,
    NoteSignature,
    VerifierKey,
    cosign,
    open_note,
    raw_public_key,
    sign_note,
    split_note,
    verify_cosignature,
)

GO = json.loads((Path(__file__).parent / "data" / "go-sumdb-note.json").read_text())


def _go_signer() -> Ed25519PrivateKey:
    material = base64.b64decode(GO["signer_key"].split("+", 4)[4])
    assert material[0] == ED25519
    return Ed25519PrivateKey.from_private_bytes(material[1:])


def test_go_sumdb_note_vector_signs_byte_for_byte() -> None:
    assert sign_note(GO["text"], "PeterNeumann", _go_signer()) == GO["note"]


def test_go_sumdb_note_vector_opens() -> None:
    key = VerifierKey.parse(GO["verifier_key"])
    assert key.encode() == GO["verifier_key"]
    assert raw_public_key(_go_signer().public_key()) == key.public_key
    assert open_note(GO["note"], key) == GO["text"]


@pytest.mark.parametrize(
    "tampered",
    [
        GO["note"].replace("cryptography", "cryptographY"),
        GO["note"].replace("x08go", "x08gp"),
        GO["note"].replace("PeterNeumann x08", "PeterNeuman x08"),
        GO["note"].replace("\n\n", "\n"),
        GO["note"][:-1],
    ],
    ids=["text", "signature", "signer name", "no blank line", "no final newline"],
)
def test_a_changed_note_does_not_open(tampered: str) -> None:
    with pytest.raises(BadSignature):
        open_note(tampered, VerifierKey.parse(GO["verifier_key"]))


@pytest.mark.parametrize(
    "vkey",
    [
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong id
        "PeterNeumann+c74f20a3",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10",  # short key
        "PeterNeumann+c74f20a3+!!!",
    ],
)
def test_malformed_verifier_keys_are_refused(vkey: str) -> None:
    with pytest.raises(BadSignature):
        VerifierKey.parse(vkey)


def test_checkpoint_text_round_trips() -> None:
    checkpoint = Checkpoint("entente.example/audit", 20852163, bytes(range(32)), 1764000000)
    text = checkpoint.text()
    assert text.splitlines() == [
        "entente.example/audit",
        "20852163",
        base64.b64encode(bytes(range(32))).decode(),
        "time 1764000000",
    ]
    assert Checkpoint.parse(text) == checkpoint


def test_c2sp_example_checkpoint_parses() -> None:
    """The example of c2sp.org/tlog-checkpoint (no extension line)."""
    text = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    parsed = Checkpoint.parse(text)
    assert (parsed.origin, parsed.tree_size, parsed.timestamp) == ("example.com/behind-the-sofa", 20852163, None)


@pytest.mark.parametrize(
    "text",
    [
        "log\n012\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        "log\n12\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I\n",
        "log\n12\n\n",
        "log\n12\nAAAA\n",
        "log\n12\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=",
    ],
    ids=["leading zero", "bad base64", "empty line", "short root", "no final newline"],
)
def test_malformed_checkpoints_are_refused(text: str) -> None:
    with pytest.raises(MalformedExport):
        Checkpoint.parse(text)


def test_cosignature_round_trip_and_tampering() -> None:
    log_key, partner_key = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    note = sign_note(Checkpoint("log.example/a", 7, b"\x01" * 32, 1764000000).text(), "log.example/a", log_key)
    text, _ = split_note(note)
    line = cosign(text, "acme.example/witness", partner_key, 1764000100)
    key = VerifierKey("acme.example/witness", ED25519_COSIGNATURE, raw_public_key(partner_key.public_key()))
    assert verify_cosignature(text, NoteSignature.parse(line.line()), key) == 1764000100
    cosigned = note + line.line()
    log_vkey = VerifierKey("log.example/a", ED25519, raw_public_key(log_key.public_key()))
    assert open_note(cosigned, log_vkey) == text  # the log's verifier ignores the cosignature line
    with pytest.raises(BadSignature):
        verify_cosignature(text.replace("\n7\n", "\n8\n"), line, key)
    forged_time = NoteSignature(line.name, line.key_id, (1764009999).to_bytes(8, "big") + line.signature[8:])
    with pytest.raises(BadSignature):
        verify_cosignature(text, forged_time, key)
    with pytest.raises(BadSignature):  # a plain signature-type key never checks a cosignature
        verify_cosignature(text, line, VerifierKey(key.name, ED25519, key.public_key))
