"""tests/SECURITY.md names a test for each audited item: every test it names must exist."""

from __future__ import annotations

import re
from pathlib import Path

MAP = Path(__file__).with_name("SECURITY.md")
ROOT = MAP.parent.parent
ABBREVIATIONS = {
    "P/": "tests/provider/",
    "F/": "tests/federation/",
    "cert": "tests/provider/test_certification.py",
    "BCP": "tests/provider/test_security_bcp.py",
    "CB": "tests/federation/test_client_bcp.py",
    "TM": "tests/federation/test_takeover_matrix.py",
}
NODE = re.compile(r"((?:tests/|P/|F/|cert|BCP|CB|TM)[\w/.]*)::(test_\w+)")


def _path(reference: str) -> Path:
    for short, long in ABBREVIATIONS.items():
        if reference == short:
            return ROOT / long
        if short.endswith("/") and reference.startswith(short):
            return ROOT / long / reference[len(short) :]
    return ROOT / reference


def test_every_test_the_security_map_names_exists() -> None:
    text = MAP.read_text()
    for short in ABBREVIATIONS:  # the map defines each abbreviation this test expands
        assert f"`{short.rstrip('/')}` = `" in text, short
    nodes = {(m.group(1), m.group(2)) for m in NODE.finditer(text)}
    assert len(nodes) >= 100, len(nodes)
    missing = []
    for reference, name in sorted(nodes):
        path = _path(reference)
        if not path.is_file() or not re.search(rf"^(async )?def {name}\(", path.read_text(), re.MULTILINE):
            missing.append(f"{reference}::{name} ({path.relative_to(ROOT)})")
    assert not missing, "tests/SECURITY.md names tests that do not exist:\n" + "\n".join(missing)
