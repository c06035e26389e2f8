"""Each tamper class is caught by `entente audit verify` (or the proof API), and a large clean log raises none.

One scenario per backend (module scope): 10,000 varied records, two partners, a checkpoint every
2,500 records (partner P keeps an early one), then exports: the whole log, P's slice with
consistency proofs from every earlier checkpoint, and the whole log cut at the early checkpoint.
Tampering happens to copies of those files, exactly where an operator (or a thief) would do it.
"""

from __future__ import annotations

import base64
import copy
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine
from sqlmodel import Session

from broker.audit.checkpoints import AuditCheckpoint, load_log_key, make_checkpoint
from broker.audit.errors import InvalidProof
from broker.audit.export import export_lines
from broker.audit.log import Actor, append_audit, leaf_data
from broker.audit.merkle import (
    CompactRange,
    consistency_proof,
    hash_leaf,
    inclusion_proof,
    verify_consistency,
    verify_inclusion,
)
from broker.audit.note import Checkpoint, open_note, sign_note, split_note
from broker.settings import Settings
from broker.tenants.models import DomainPolicy
from broker.tenants.service import add_partner
from tests.audit.conftest import OPERATOR_TOKEN, verify_cli
from tests.cli_runner import Run

OPERATOR = {"Authorization": f"Bearer {OPERATOR_TOKEN}"}
RECORDS = 10_000
EVERY = 2_500
Lines = list[dict[str, Any]]


@dataclass
class Scenario:
    dir: Path
    partner_id: str
    partner_slug: str
    earlier: list[AuditCheckpoint]
    """Checkpoints signed while the records were written, oldest first; P holds the first."""
    latest: AuditCheckpoint
    full: Lines
    slice: Lines
    early_full: Lines

    def path(self, name: str) -> Path:
        return self.dir / name


def _detail(n: int) -> dict[str, Any]:
    """Varied JSON: unicode, escapes, nesting, numbers of every shape, nulls, booleans."""
    return {
        "n": n,
        "name": ["Zoë", "Ærøskøbing", "山田太郎", 'O\'Brien "quoted"', "back\\slash", "tab\tnew\nline", "👩‍💻"][n % 7],
        "ratio": [0.1, 1e-7, 1e21, -0.0, 3.0, 123456789.123][n % 6],
        "big": 2**53 + n,
        "flags": [n % 2 == 0, None, {"nested": {"deeper": [n, str(n), None]}}],
        "empty": {} if n % 3 else [],
    }


def _write(path: Path, lines: Lines | list[str]) -> Path:
    path.write_text(
        "".join(line if isinstance(line, str) else json.dumps(line, ensure_ascii=False) + "\n" for line in lines)
    )
    return path


def _parse(lines: list[str]) -> Lines:
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def scenario(engine: Engine, settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Scenario:
    directory = tmp_path_factory.mktemp("tamper")
    actor = Actor("cli", "tamper-tests")
    slug, other = f"t{uuid.uuid4().hex[:10]}", f"u{uuid.uuid4().hex[:10]}"
    earlier: list[AuditCheckpoint] = []
    with Session(engine, expire_on_commit=False) as session:
        mine, theirs = (
            add_partner(
                session=session, slug=s, name=s, domains=[f"{s}.test"], actor=actor, domain_policy=DomainPolicy.ENFORCE
            )
            for s in (slug, other)
        )
        mine_id, theirs_id = mine.id, theirs.id
        for n in range(RECORDS):
            append_audit(
                session,
                actor=Actor(["scim_token", "cli", "system"][n % 3], f"actor-{n % 11}"),
                action=f"test.tamper.{n % 5}",
                partner_id=[mine_id, theirs_id, None][n % 3],
                resource_type=["User", "Group", None][n % 3],
                resource_id=str(uuid.UUID(int=n)),
                before={"v": n} if n % 4 else None,
                after={"v": n + 1} if n % 5 else None,
                detail=_detail(n),
            )
            if (n + 1) % EVERY == 0:
                session.commit()
                made = make_checkpoint(session, settings, force=True, wait=True)
                assert made is not None
                earlier.append(made)
        latest = earlier.pop()
        full = list(export_lines(engine, tree_size=latest.tree_size))
        slice_ = list(
            export_lines(
                engine,
                tree_size=latest.tree_size,
                partner=(mine_id, slug),
                prove_from=[c.tree_size for c in earlier],
            )
        )
        early_full = list(export_lines(engine, tree_size=earlier[0].tree_size))
    scenario = Scenario(directory, mine_id, slug, earlier, latest, _parse(full), _parse(slice_), _parse(early_full))
    _write(scenario.path("full.jsonl"), full)
    _write(scenario.path("slice.jsonl"), slice_)
    _write(scenario.path("early.jsonl"), early_full)
    scenario.path("latest.note").write_text(latest.note)
    for number, held in enumerate(earlier):
        scenario.path(f"earlier-{number}.note").write_text(held.note)
    scenario.path("log.vkey").write_text(load_log_key(settings).verifier_key.encode())
    return scenario


def _verify(s: Scenario, export: Path, *, checkpoint: Path | None = None, earlier: list[Path] | None = None) -> Run:
    args: list[str | Path] = [
        export,
        "--checkpoint",
        checkpoint or s.path("latest.note"),
        "--public-key",
        s.path("log.vkey"),
    ]
    for path in earlier or []:
        args += ["--earlier", path]
    return verify_cli(*args)


def _fails(run: Run, message: str) -> None:
    assert run.code == 1, run
    assert run.stdout == "", run
    assert run.stderr.startswith("error: ") and message in run.stderr, run


def _leaf_lines(lines: Lines) -> list[int]:
    return [i for i, line in enumerate(lines) if line["kind"] == "leaf"]


# --- zero false alarms ------------------------------------------------------------------------


def test_a_clean_log_of_ten_thousand_records_verifies(scenario: Scenario) -> None:
    held = [scenario.path(f"earlier-{i}.note") for i in range(len(scenario.earlier))]
    leaves = len(_leaf_lines(scenario.full))
    assert leaves == scenario.latest.tree_size >= RECORDS
    whole = _verify(scenario, scenario.path("full.jsonl"), earlier=held)
    assert whole.code == 0 and whole.stderr == "", whole
    assert f"ok: {leaves} leaves of the whole log" in whole.stdout
    sliced = _verify(scenario, scenario.path("slice.jsonl"), earlier=held)
    assert sliced.code == 0 and sliced.stderr == "", sliced
    assert len(_leaf_lines(scenario.slice)) >= RECORDS // 3
    early = _verify(scenario, scenario.path("early.jsonl"), checkpoint=held[0])
    assert early.code == 0, early


def test_a_suffix_export_verifies_from_its_prefix_hashes(scenario: Scenario, engine: Engine) -> None:
    since = scenario.earlier[0].tree_size - 17
    lines = list(export_lines(engine, tree_size=scenario.latest.tree_size, since=since, prove_from=[7]))
    path = _write(scenario.path("suffix.jsonl"), lines)
    assert len(_leaf_lines(_parse(lines))) == scenario.latest.tree_size - since
    done = _verify(scenario, path, earlier=[scenario.path("earlier-0.note"), scenario.path("earlier-1.note")])
    assert done.code == 0, done


def test_sampled_api_proofs_verify_against_the_checkpoint(scenario: Scenario, audit_api: TestClient) -> None:
    size, root = scenario.latest.tree_size, scenario.latest.root_hash
    for index in range(0, size, max(1, size // 200)):
        body = audit_api.get(f"/proofs/inclusion?leaf_index={index}&tree_size={size}", headers=OPERATOR).json()
        verify_inclusion(
            index, size, base64.b64decode(body["leaf_hash"]), [base64.b64decode(p) for p in body["proof"]], root
        )


# --- tamper classes ---------------------------------------------------------------------------


def _tampered(s: Scenario, name: str, source: Lines, change: Callable[[Lines], Lines]) -> Path:
    return _write(s.path(name), change(copy.deepcopy(source)))


def test_edited_record(scenario: Scenario) -> None:
    def edit(lines: Lines) -> Lines:
        lines[_leaf_lines(lines)[1234]]["entry"]["action"] = "partner.deleted"
        return lines

    _fails(_verify(scenario, _tampered(scenario, "edited.jsonl", scenario.full, edit)), "root recomputed")
    _fails(
        _verify(scenario, _tampered(scenario, "edited-slice.jsonl", scenario.slice, edit)), "is not in the signed tree"
    )

    def edit_detail(lines: Lines) -> Lines:
        lines[_leaf_lines(lines)[-1]]["entry"]["detail"]["n"] += 1
        return lines

    _fails(_verify(scenario, _tampered(scenario, "edited-detail.jsonl", scenario.full, edit_detail)), "root recomputed")


def test_deleted_record(scenario: Scenario) -> None:
    def delete(lines: Lines) -> Lines:
        del lines[_leaf_lines(lines)[500]]
        lines[-1]["leaves"] -= 1
        return lines

    _fails(_verify(scenario, _tampered(scenario, "deleted.jsonl", scenario.full, delete)), "removed or reordered")

    def delete_and_renumber(lines: Lines) -> Lines:
        """Hide the gap: renumber what follows and repeat the last record so the count still matches."""
        leaves = _leaf_lines(lines)
        removed = lines.pop(leaves[500])
        for i in leaves[500:-1]:
            lines[i]["leaf_index"] -= 1
        filler = copy.deepcopy(lines[-2])
        filler["leaf_index"] += 1
        lines.insert(len(lines) - 1, filler)
        assert removed["leaf_index"] == 500 + lines[1]["leaf_index"]
        return lines

    _fails(
        _verify(scenario, _tampered(scenario, "deleted2.jsonl", scenario.full, delete_and_renumber)), "root recomputed"
    )


def test_reordered_records(scenario: Scenario) -> None:
    def swap_lines(lines: Lines) -> Lines:
        a, b = _leaf_lines(lines)[10:12]
        lines[a], lines[b] = lines[b], lines[a]
        return lines

    _fails(_verify(scenario, _tampered(scenario, "reordered.jsonl", scenario.full, swap_lines)), "removed or reordered")
    _fails(_verify(scenario, _tampered(scenario, "reordered-slice2.jsonl", scenario.slice, swap_lines)), "reordered")

    def swap_entries(lines: Lines) -> Lines:
        a, b = _leaf_lines(lines)[10:12]
        lines[a]["entry"], lines[b]["entry"] = lines[b]["entry"], lines[a]["entry"]
        return lines

    _fails(_verify(scenario, _tampered(scenario, "reordered2.jsonl", scenario.full, swap_entries)), "root recomputed")
    _fails(
        _verify(scenario, _tampered(scenario, "reordered-slice.jsonl", scenario.slice, swap_entries)),
        "not in the signed tree",
    )


def test_forged_insert(scenario: Scenario) -> None:
    def insert(lines: Lines) -> Lines:
        leaves = _leaf_lines(lines)
        forged = copy.deepcopy(lines[leaves[700]])
        forged["entry"]["action"] = "scim.user.created"
        forged["entry"]["detail"] = {"forged": True}
        forged["leaf_index"] += 1
        lines.insert(leaves[700] + 1, forged)
        for i in leaves[701:]:
            lines[i + 1]["leaf_index"] += 1
        lines.pop(-2)  # drop the last record so the count matches the checkpoint
        return lines

    _fails(_verify(scenario, _tampered(scenario, "inserted.jsonl", scenario.full, insert)), "root recomputed")

    def insert_in_slice(lines: Lines) -> Lines:
        """A forged record with the neighbouring record's proof, at a free leaf index."""
        leaves = _leaf_lines(lines)
        forged = copy.deepcopy(lines[leaves[3]])
        forged["entry"]["detail"] = {"forged": True}
        forged["leaf_index"] = lines[leaves[3]]["leaf_index"] + 1
        assert forged["leaf_index"] < lines[leaves[4]]["leaf_index"]
        lines.insert(leaves[3] + 1, forged)
        lines[-1]["leaves"] += 1
        return lines

    _fails(
        _verify(scenario, _tampered(scenario, "inserted-slice.jsonl", scenario.slice, insert_in_slice)),
        "not in the signed tree",
    )


def _rebuilt(s: Scenario, lines: Lines) -> tuple[list[bytes], bytes]:
    """Every leaf hash of a (full, from 0) export and the root it gives: what a forger recomputes."""
    leaves = [hash_leaf(leaf_data(line["entry"])) for line in lines if line["kind"] == "leaf"]
    edge = CompactRange()
    for leaf in leaves:
        edge.append(leaf)
    return leaves, edge.root()


def _edit_record(lines: Lines, index: int) -> Lines:
    lines = copy.deepcopy(lines)
    lines[_leaf_lines(lines)[index]]["entry"]["detail"] = {"rewritten": True}
    return lines


def test_rechained_log_without_the_key(scenario: Scenario) -> None:
    """The forger recomputes every hash and a new root, but cannot sign it."""
    lines = _edit_record(scenario.full, 42)
    _, root = _rebuilt(scenario, lines)
    text, signatures = split_note(scenario.latest.note)
    parsed = Checkpoint.parse(text)
    forged_text = Checkpoint(parsed.origin, parsed.tree_size, root, parsed.timestamp).text()
    export = _write(scenario.path("rechained.jsonl"), lines)

    kept_signature = scenario.path("rechained-kept.note")
    kept_signature.write_text(forged_text + "\n" + signatures[0].line())
    _fails(_verify(scenario, export, checkpoint=kept_signature), "does not verify")

    own_key = scenario.path("rechained-own.note")
    own_key.write_text(sign_note(forged_text, parsed.origin, Ed25519PrivateKey.generate()))
    _fails(_verify(scenario, export, checkpoint=own_key), f"no signature by {parsed.origin}")


def test_torn_write(scenario: Scenario) -> None:
    text = scenario.path("full.jsonl").read_text()
    torn = scenario.path("torn.jsonl")
    torn.write_text(text[: len(text) - 7])  # the writer died inside the last line
    _fails(_verify(scenario, torn), "torn write")
    cut = scenario.path("torn-mid.jsonl")
    middle = text.index("\n", len(text) // 2)
    cut.write_text(text[: middle + 30])
    _fails(_verify(scenario, cut), "torn write")
    at_boundary = scenario.path("torn-line.jsonl")
    at_boundary.write_text(text[: text.rindex("\n", 0, len(text) - 1) + 1])  # whole lines, but no end line
    _fails(_verify(scenario, at_boundary), "no end line")
    slice_text = scenario.path("slice.jsonl").read_text()
    torn_slice = scenario.path("torn-slice.jsonl")
    torn_slice.write_text(slice_text[: slice_text.rindex("\n", 0, len(slice_text) - 1) + 1])
    _fails(_verify(scenario, torn_slice), "no end line")


def test_tail_truncation(scenario: Scenario) -> None:
    """An export shorter than the checkpoint the verifier holds."""
    _fails(_verify(scenario, scenario.path("early.jsonl")), "tail truncated")

    def chop(lines: Lines) -> Lines:
        end = lines.pop()
        del lines[-25:]
        end["leaves"] -= 25
        return [*lines, end]

    _fails(_verify(scenario, _tampered(scenario, "chopped.jsonl", scenario.full, chop)), "records are missing")

    def claim_smaller(lines: Lines) -> Lines:
        lines = chop(lines)
        lines[0]["tree_size"] -= 25
        return lines

    _fails(_verify(scenario, _tampered(scenario, "chopped2.jsonl", scenario.full, claim_smaller)), "tail truncated")


def test_resigned_with_a_stolen_key_after_a_partner_holds_a_checkpoint(
    scenario: Scenario, settings: Settings, audit_api: TestClient
) -> None:
    """The thief rewrites a record the partner's checkpoint covers and signs the result with the real key."""
    stolen = load_log_key(settings)
    held = scenario.earlier[0]
    lines = _edit_record(scenario.full, held.tree_size // 2)
    leaves, root = _rebuilt(scenario, lines)
    size = len(leaves)
    parsed = Checkpoint.parse(split_note(scenario.latest.note)[0])
    forged_note = sign_note(
        Checkpoint(parsed.origin, size, root, parsed.timestamp).text(), stolen.origin, stolen.private_key
    )
    forged = scenario.path("stolen.note")
    forged.write_text(forged_note)
    export = _write(scenario.path("stolen.jsonl"), lines)

    alone = _verify(scenario, export, checkpoint=forged)
    assert alone.code == 0, alone  # the signature is genuine: alone, a stolen key is undetectable ...
    _fails(  # ... but not to a partner holding an earlier checkpoint
        _verify(scenario, export, checkpoint=forged, earlier=[scenario.path("earlier-0.note")]), "history was rewritten"
    )

    # the partner's slice, forged consistently: proofs from the forged tree, a forged consistency proof
    slice_ = copy.deepcopy(scenario.slice)
    header, mine = slice_[0], [line for line in slice_ if line["kind"] == "leaf"][:3]
    rewritten = {line["leaf_index"]: line["entry"] for line in lines if line["kind"] == "leaf"}
    for line in mine:
        line["entry"] = rewritten[line["leaf_index"]]
        line["proof"] = [base64.b64encode(p).decode() for p in inclusion_proof(leaves, line["leaf_index"])]
    header["consistency"] = {
        str(held.tree_size): [base64.b64encode(p).decode() for p in consistency_proof(leaves, held.tree_size)]
    }
    forged_slice = _write(scenario.path("stolen-slice.jsonl"), [header, *mine, {"kind": "end", "leaves": 3}])
    assert _verify(scenario, forged_slice, checkpoint=forged).code == 0
    _fails(
        _verify(scenario, forged_slice, checkpoint=forged, earlier=[scenario.path("earlier-0.note")]),
        "does not extend the earlier one",
    )

    # and the log's own API cannot prove the forged checkpoint consistent with the partner's
    body = audit_api.get(f"/proofs/consistency?first={held.tree_size}&second={size}", headers=OPERATOR).json()
    genuine = [base64.b64decode(p) for p in body["proof"]]
    verify_consistency(held.tree_size, size, genuine, held.root_hash, scenario.latest.root_hash)
    with pytest.raises(InvalidProof):
        verify_consistency(held.tree_size, size, genuine, held.root_hash, root)
    assert open_note(forged_note, load_log_key(settings).verifier_key)  # it really is the log's signature
