"""Signed notes, key strings, checkpoints and cosignatures against transcribed vectors."""

from __future__ import annotations

import base64

import pytest

from porchlight.tlog.checkpoint import (
    Checkpoint,
    CheckpointError,
    add_signatures,
    cosign,
    open_checkpoint,
    parse_checkpoint_body,
    sign_checkpoint,
    verified_cosignatures,
)
from porchlight.tlog.note import (
    ALG_COSIGNATURE_V1,
    CosignatureSigner,
    CosignatureVerifier,
    Ed25519Signer,
    NoteError,
    generate_signer,
    open_note,
    parse_note,
    parse_signature_line,
    parse_signer_key,
    parse_verifier_key,
    sign_note,
)
from tests.testdata import require_testdata
from tests.tlog.vectors import derived, transcribed


def test_peter_neumann_signer_reproduces_the_signed_note() -> None:
    peter = transcribed()["go_sumdb_note"]["peter"]
    signer = parse_signer_key(peter["skey"])
    assert signer.verifier().vkey() == peter["vkey"]
    assert signer.skey() == peter["skey"]
    assert sign_note(peter["text"], [signer]) == peter["signed_note"]
    note = open_note(peter["signed_note"], [parse_verifier_key(peter["vkey"])])
    assert note.text == peter["text"]


def test_enoch_zero_seed_key_and_double_signed_note() -> None:
    vectors = transcribed()["go_sumdb_note"]
    enoch = Ed25519Signer("EnochRoot", bytes.fromhex(vectors["enoch"]["ed25519_seed_hex"]))
    assert enoch.verifier().vkey() == vectors["enoch"]["vkey"]
    peter = parse_signer_key(vectors["peter"]["skey"])
    assert sign_note(vectors["peter"]["text"], [peter, enoch]) == vectors["double_signed_note"]
    for vkey in (vectors["peter"]["vkey"], vectors["enoch"]["vkey"]):
        open_note(vectors["double_signed_note"], [parse_verifier_key(vkey)])
    assert (
        parse_note(vectors["double_signed_note"]).signatures[1].line().rstrip("\n")
        == (vectors["enoch"]["signature_line"])
    )


def test_bad_verifier_keys_are_rejected() -> None:
    vectors = transcribed()["go_sumdb_note"]
    for bad in vectors["bad_vkeys"]:
        with pytest.raises(NoteError):
            parse_verifier_key(bad)
    vkey = vectors["peter"]["vkey"]
    for end in range(len(vkey)):
        with pytest.raises(NoteError):
            parse_verifier_key(vkey[:end])
    for start in range(1, len(vkey)):
        with pytest.raises(NoteError):
            parse_verifier_key(vkey[start:])
    for position in range(len(vkey)):
        bumped = vkey[:position] + chr(ord(vkey[position]) + 1) + vkey[position + 1 :]
        with pytest.raises(NoteError):
            parse_verifier_key(bumped)


def test_malformed_notes_are_rejected() -> None:
    peter = transcribed()["go_sumdb_note"]["peter"]
    text, signed = peter["text"], peter["signed_note"]
    sig_line = signed[len(text) + 1 :]
    bad = [
        text,
        text + "\n",
        signed.rstrip("\n"),
        "\x01" + signed,
        signed.encode()[:10] + b"\xff" + signed.encode()[10:],
        text + "\n— Bad Name " + sig_line.split(" ", 2)[2],
        signed + "not a signature\n",
        text + "\n" + sig_line.replace("x08go", "x08go="),
    ]
    verifier = parse_verifier_key(peter["vkey"])
    for raw in bad:
        with pytest.raises(NoteError):
            open_note(raw, [verifier])


def test_a_wrong_signature_by_a_known_key_is_an_error() -> None:
    peter = transcribed()["go_sumdb_note"]["peter"]
    verifier = parse_verifier_key(peter["vkey"])
    tampered = peter["signed_note"].replace("cryptography", "Cryptography")
    with pytest.raises(NoteError, match="invalid signature"):
        open_note(tampered, [verifier])
    other = parse_verifier_key(transcribed()["go_sumdb_note"]["enoch"]["vkey"])
    with pytest.raises(NoteError, match="no signature from a known key"):
        open_note(peter["signed_note"], [other])


def test_c2sp_signed_note_example() -> None:
    example = transcribed()["c2sp_signed_note_example"]
    note = open_note(example["signed_note"], [parse_verifier_key(example["vkey"])])
    assert note.text == example["signed_text"]


def test_real_world_verifier_keys_parse() -> None:
    for vkey in transcribed()["real_world_vkeys_keyid_check"]["ed25519_vkeys"]:
        assert parse_verifier_key(vkey).vkey() == vkey


def test_formats_test_keys_round_trip() -> None:
    for keys in transcribed()["transparency_dev_formats_checkpoint_parse"][
        "test_keys_TEST_ONLY"
    ].values():
        assert parse_signer_key(keys["skey"]).verifier().vkey() == keys["vkey"]


def test_generated_keys_round_trip_and_sign() -> None:
    for algorithm in (1, ALG_COSIGNATURE_V1):
        signer = generate_signer("auditor.example/a1", algorithm)
        again = parse_signer_key(signer.skey())
        assert again.verifier().vkey() == signer.verifier().vkey()
        signed = sign_note("hello\n", [again])
        open_note(signed, [parse_verifier_key(signer.verifier().vkey())])


def test_checkpoint_parsing_vectors() -> None:
    vectors = transcribed()["transparency_dev_formats_checkpoint_parse"]
    for case in vectors["valid"]:
        checkpoint = parse_checkpoint_body(case["in"], hash_size=None)
        assert "".join(x + "\n" for x in checkpoint.extensions) == case.get("rest", "")
        if "origin" in case:
            assert checkpoint.origin == case["origin"]
            assert checkpoint.size == case["size"]
            assert checkpoint.root_hash == case["hash_ascii"].encode()
        assert checkpoint.body() == case["in"]
        with pytest.raises(CheckpointError):
            parse_checkpoint_body(case["in"])  # not 32 bytes: strict by default
    for bad in vectors["invalid"]:
        with pytest.raises(CheckpointError):
            parse_checkpoint_body(bad, hash_size=None)
    for bad in ("Log\n0123\nYmFuYW5hcw==\n", "Log\n1\nYmFuYW5hcw==\n\n", "Log\n+1\nYmFuYW5hcw==\n"):
        with pytest.raises(CheckpointError):
            parse_checkpoint_body(bad, hash_size=None)


def test_go_sumdb_tree_note_is_a_checkpoint() -> None:
    golden = transcribed()["go_sumdb_tlog"]["format_tree_golden"]
    checkpoint = parse_checkpoint_body(golden)
    assert (checkpoint.origin, checkpoint.size) == ("go.sum database tree", 123456789012)
    assert (
        base64.b64encode(checkpoint.root_hash).decode()
        == (transcribed()["go_sumdb_tlog"]["record_hash_of_ascii_hello_world_b64"])
    )


def test_c2sp_cosigned_checkpoint_example_parses() -> None:
    examples = transcribed()["c2sp_format_examples_unverifiable"]
    checkpoint = parse_checkpoint_body(parse_note(examples["checkpoint"]).text)
    assert (checkpoint.origin, checkpoint.size) == ("example.com/behind-the-sofa", 20852163)
    line = parse_signature_line(examples["cosigned_checkpoint_witness_line"])
    decoded = examples["cosignature_line_decoded"]
    assert f"{line.key_id:08x}" == decoded["key_id_hex"]
    assert CosignatureVerifier.timestamp(line.signature) == decoded["timestamp_u64_be"]
    assert len(line.signature) == 8 + decoded["ed25519_sig_len"]


def test_cosignature_v1_vector() -> None:
    vector = derived()["ed25519_cosignature_v1"]
    signer = CosignatureSigner(
        vector["witness_name"],
        bytes.fromhex(vector["witness_ed25519_seed_hex"]),
        clock=lambda: vector["timestamp"],
    )
    assert signer.public_key.hex() == vector["witness_pubkey_hex"]
    assert f"{signer.key_id:08x}" == vector["key_id_hex"]
    assert signer.verifier().vkey() == vector["witness_vkey"]
    log_checkpoint = require_testdata("tlog", "tessera-testdata-log", "checkpoint").read_text()
    signature = cosign(log_checkpoint, signer)
    assert signature.line().rstrip("\n") == vector["signature_line"]
    cosigned = add_signatures(log_checkpoint, [signature])
    assert cosigned == vector["checkpoint_with_log_sig_and_cosig"]
    witness = parse_verifier_key(vector["witness_vkey"])
    assert isinstance(witness, CosignatureVerifier)
    assert verified_cosignatures(cosigned, [witness]) == [(witness, vector["timestamp"])]
    log_key = transcribed()["tessera_testdata_log"]["log_public_vkey"]
    assert open_checkpoint(cosigned, parse_verifier_key(log_key)).checkpoint.size == 15
    # The cosignature covers the whole body: a different root breaks it.
    forged = cosigned.replace("rKbD", "rKbE")
    with pytest.raises(CheckpointError):
        verified_cosignatures(forged, [witness])


def test_sign_and_open_checkpoint_round_trip() -> None:
    signer = generate_signer("porchlight.example/log")
    checkpoint = Checkpoint("porchlight.example/log", 7, bytes(range(32)), ("ext one",))
    text = sign_checkpoint(checkpoint, signer)
    assert open_checkpoint(text, signer.verifier()).checkpoint == checkpoint
    with pytest.raises(CheckpointError):
        open_checkpoint(text, generate_signer("porchlight.example/log").verifier())
