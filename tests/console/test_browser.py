"""The console in a real browser (Debian's chromium through Playwright) against `entente serve` as a real process.

SQLite only, to keep the suite fast: the HTTP-level tests (test_pages.py) cover both databases.
Every page is visited, its key text must be visible, and a screenshot of each is saved (with a policy dry
run, an audit proof check and the stale-access report).
"""

from __future__ import annotations

import datetime as dt
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from playwright.sync_api import Page, expect, sync_playwright
from sqlmodel import Session

from broker.audit.log import Actor
from broker.db import create_db_engine
from broker.lifecycle.engine import reconcile_partner
from broker.policy.store import save_policies
from broker.settings import Settings
from broker.tenants.models import DomainPolicy
from broker.tenants.service import add_partner, issue_scim_token
from broker.workspaces.service import add_workspace
from tests.conftest import GROUP_SCHEMA, USER_SCHEMA
from tests.peers.entente_process import ENTENTE, _environment, _wait_healthy, free_port, stop_process

CHROMIUM = Path("/usr/bin/chromium")
PASSWORD = "browser test password"  # noqa: S105
SETUP = Actor(kind="cli", id="browser-test")


@dataclass(frozen=True)
class Served:
    root: str
    settings: Settings
    log: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    if not CHROMIUM.exists():
        pytest.fail("Debian's chromium is required at /usr/bin/chromium: apt-get install -y chromium")
    workdir = tmp_path_factory.mktemp("console-browser")
    port = free_port()
    root = f"http://127.0.0.1:{port}"
    env = _environment(f"sqlite:///{workdir / 'entente.db'}", root)
    env.update(
        ENTENTE_BOOTSTRAP_ADMIN_PASSWORD=PASSWORD,
        ENTENTE_SECRET_KEY=Fernet.generate_key().decode(),
        ENTENTE_AUDIT_SIGNING_KEY_FILE=str(workdir / "audit.key"),
        ENTENTE_AUDIT_CHECKPOINT_INTERVAL_SECONDS="0.5",
    )
    log = workdir / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(  # noqa: S603
            [str(ENTENTE), "serve", "--host", "127.0.0.1", "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )  # fmt: skip
    try:
        _wait_healthy(process, root, log)
        settings = Settings(
            database_url=env["ENTENTE_DATABASE_URL"], public_base_url=root, secret_key=env["ENTENTE_SECRET_KEY"]
        )
        yield Served(root, settings, log)
    finally:
        died = stop_process(process)
    text = log.read_text(errors="replace")
    assert died is None, text
    assert "Traceback (most recent call last)" not in text, text


def _seed(served: Served) -> tuple[str, str]:
    """A partner with a person in ``eng`` (granted a workspace), through the CLI's services and real SCIM."""
    engine = create_db_engine(served.settings)
    with Session(engine, expire_on_commit=False) as session:
        partner = add_partner(
            session=session, slug="globex", name="Globex Corp", domains=["globex.test"], actor=SETUP,
            domain_policy=DomainPolicy.ENFORCE,
        )  # fmt: skip
        token = issue_scim_token(session=session, slug="globex", expires_in=dt.timedelta(hours=1), actor=SETUP)
        add_workspace(
            session, settings=served.settings, slug="team-wiki", name=None, connector="scim",
            values={"base_url": "http://127.0.0.1:9/scim/v2", "token": "t"}, actor=SETUP,
        )  # fmt: skip
    scim = httpx.Client(base_url=f"{served.root}/scim/v2", headers={"Authorization": f"Bearer {token.secret_text}"})
    user = scim.post(
        "/Users",
        json={"schemas": [USER_SCHEMA], "userName": "grace@globex.test", "displayName": "Grace Hopper",
              "emails": [{"value": "grace@globex.test", "primary": True}]},
    )  # fmt: skip
    assert user.status_code == 201, user.text
    group = scim.post("/Groups", json={"schemas": [GROUP_SCHEMA], "displayName": "eng",
                                       "members": [{"value": user.json()["id"]}]})  # fmt: skip
    assert group.status_code == 201, group.text
    scim.close()
    with Session(engine, expire_on_commit=False) as session:
        policies = save_policies(
            session,
            documents=[("globex.yaml", "- id: globex-eng\n  tenant: globex\n  when: { groups_any: [eng] }\n"
                                      "  grant: [{ workspace: team-wiki, role: member }]\n")],
            actor=SETUP,
        )  # fmt: skip
        reconcile_partner(session, partner_id=partner.id, policies=policies, cause="policy")  # as `policy apply`
        session.commit()
    engine.dispose()
    return user.json()["id"], token.token.id


def _visit(page: Page, shots: Path, url: str, name: str, *texts: str) -> None:
    page.goto(url)
    for text in texts:
        expect(page.get_by_text(text, exact=False).first).to_be_visible()
    path = shots / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 1000


def test_an_operator_uses_every_page_and_the_kill_switch_in_a_browser(served: Served, tmp_path: Path) -> None:
    grace, token_id = _seed(served)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page()
        page.goto(f"{served.root}/console")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        page.screenshot(path=str(shots / "login.png"))
        page.get_by_label("Username").fill("admin")
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="Partners")).to_be_visible()

        _visit(page, shots, f"{served.root}/console/partners", "partners", "globex", "globex.test", token_id)
        _visit(page, shots, f"{served.root}/console/partners/globex", "people", "grace@globex.test")
        _visit(page, shots, f"{served.root}/console/idps", "idps", "No IdP connections.")
        _visit(page, shots, f"{served.root}/console/workspaces", "workspaces", "team-wiki", "Dead letters")
        _visit(page, shots, f"{served.root}/console/policies", "policies", "id: globex-eng")
        page.get_by_label("Policy YAML").fill("rules: []\n")  # a dry run: grace would lose team-wiki
        page.get_by_role("button", name="Show what would change").click()
        expect(page.get_by_text("Nothing was applied.", exact=False)).to_be_visible()
        expect(page.get_by_role("cell", name="grace@globex.test")).to_be_visible()
        page.screenshot(path=str(shots / "dry-run.png"), full_page=True)
        _visit(page, shots, f"{served.root}/console/people/{grace}", "person", "team-wiki", "access.gain")
        _visit(page, shots, f"{served.root}/console/audit", "audit", "partner.created", "Latest signed checkpoint")
        page.get_by_label("Leaf index").fill("0")
        page.get_by_role("button", name="Check proof").click()
        expect(page.locator("#proof-result")).to_contain_text("Verified against checkpoint")
        page.screenshot(path=str(shots / "proof.png"), full_page=True)
        _visit(page, shots, f"{served.root}/console/reports", "reports", "Download the whole report", token_id)

        page.goto(f"{served.root}/console/people/{grace}")
        page.get_by_label("Reason (recorded in the audit log)").fill("stolen laptop")
        page.get_by_label("Suspend this person in every workspace").check()
        page.get_by_role("button", name="Suspend everywhere").click()
        expect(page.get_by_text("suspended by the kill switch")).to_be_visible()
        expect(page.get_by_text("No access anywhere.")).to_be_visible()
        page.screenshot(path=str(shots / "killed.png"), full_page=True)
        _visit(page, shots, f"{served.root}/console/kill", "kill", "stolen laptop", "grace@globex.test")
        browser.close()
    assert {p.name for p in shots.iterdir()} >= {
        "login.png", "partners.png", "people.png", "idps.png", "workspaces.png", "policies.png", "person.png",
        "audit.png", "killed.png", "kill.png", "dry-run.png", "proof.png", "reports.png",
    }  # fmt: skip
