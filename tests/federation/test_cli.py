"""`entente idp add` / `entente idp list` (the typer app in process, on a fresh database per backend)."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from sqlmodel import Session, create_engine, select

from broker.federation.models import IdPConnection
from tests.cli_runner import Cli
from tests.peers.oidc_provider_process import OidcProvider
from tests.peers.saml_idp_process import SamlIdp


def _partner(cli: Cli) -> str:
    slug = f"idp{uuid.uuid4().hex[:8]}"
    cli.ok("partner", "add", slug, "--name", "IdP Co", "--domain", f"{slug}.test")
    return slug


def test_idp_add_checks_discovery_seals_the_secret_and_prints_the_redirect_uri(
    cli_in_process: Cli, oidc_provider: OidcProvider
) -> None:
    slug = _partner(cli_in_process)
    added = cli_in_process.ok(
        "idp", "add", slug, "--oidc-issuer", oidc_provider.issuer, "--client-id", "entente-client",
        "--client-secret", "s3cret-client-secret", "--bind", "email", "--jit",
    )  # fmt: skip
    assert added.lines == [
        f"idp connection {slug}.oidc (oidc, bind email) added for partner {slug}",
        f"redirect URI to register at the IdP: http://127.0.0.1:8000/login/callback/{slug}.oidc",
        f"sign-in link for {slug}'s people: http://127.0.0.1:8000/login/{slug}",
    ]
    listed = cli_in_process.ok("idp", "list", slug).stdout
    assert listed == f"{slug}.oidc\t{slug}\toidc\t{oidc_provider.issuer}\tentente-client\tbind=email\tjit\n"
    assert "s3cret" not in listed
    with Session(create_engine(cli_in_process.url)) as session:
        row = session.exec(select(IdPConnection).where(IdPConnection.id == f"{slug}.oidc")).one()
    assert row.client_secret_sealed and "s3cret" not in row.client_secret_sealed
    assert (row.binding_key, row.jit, row.version) == ("email", True, 1)


def test_idp_add_takes_the_secret_from_the_environment_and_a_name(
    cli_in_process: Cli, oidc_provider: OidcProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    slug = _partner(cli_in_process)
    monkeypatch.setenv("ENTENTE_IDP_CLIENT_SECRET", "from-env")
    cli_in_process.ok("idp", "add", slug, "--oidc-issuer", oidc_provider.issuer, "--client-id", "c2", "--name", "okta",
                      "--no-check")  # fmt: skip
    assert f"{slug}.okta\t{slug}\toidc" in cli_in_process.ok("idp", "list").stdout


def test_idp_add_refuses_in_one_line(cli_in_process: Cli, oidc_provider: OidcProvider) -> None:
    slug = _partner(cli_in_process)
    base = ["--client-id", "c", "--client-secret", "s"]
    cli_in_process.fails(
        "idp", "add", slug, "--oidc-issuer", "http://idp.example.com", *base,
        message="issuer 'http://idp.example.com' must use https (plain http only on a loopback address)",
    )  # fmt: skip
    cli_in_process.fails(
        "idp", "add", slug, "--oidc-issuer", f"{oidc_provider.issuer}/", *base,
        message=f"the discovery document of {oidc_provider.issuer}/ names the issuer '{oidc_provider.issuer}': "
        "it must be identical",
    )  # fmt: skip
    cli_in_process.fails(
        "idp",
        "add",
        "no-such-partner",
        "--oidc-issuer",
        oidc_provider.issuer,
        *base,
        message="no partner 'no-such-partner'",
    )
    cli_in_process.ok("idp", "add", slug, "--oidc-issuer", oidc_provider.issuer, *base)
    cli_in_process.fails(
        "idp", "add", slug, "--oidc-issuer", oidc_provider.issuer, *base,
        message=f"partner '{slug}' already has an IdP connection named 'oidc'",
    )  # fmt: skip


def test_idp_add_refuses_an_unreachable_issuer(cli_in_process: Cli) -> None:
    slug = _partner(cli_in_process)
    result = cli_in_process("idp", "add", slug, "--oidc-issuer", "http://127.0.0.1:9", "--client-id", "c",
                            "--client-secret", "s")  # fmt: skip
    assert result.code == 1
    assert result.stderr == "error: the identity provider's discovery document could not be fetched (ConnectError)\n"


def test_idp_add_saml_from_the_metadata_url_prints_what_the_idp_needs(
    cli_in_process: Cli, saml_idp: SamlIdp, tmp_path: Path
) -> None:
    slug = _partner(cli_in_process)
    added = cli_in_process.ok("idp", "add", slug, "--saml-metadata", saml_idp.metadata_url, "--bind", "email",
                              "--saml-email-verified", "--jit")  # fmt: skip
    assert added.lines == [
        f"idp connection {slug}.saml (saml, bind email) added for partner {slug}",
        f"IdP entity ID: {saml_idp.entity_id}",
        f"SP metadata to import at the IdP (also its entity ID): http://127.0.0.1:8000/login/saml/{slug}.saml/metadata",
        f"  ACS URL (HTTP-POST): http://127.0.0.1:8000/login/callback/{slug}.saml",
        f"sign-in link for {slug}'s people: http://127.0.0.1:8000/login/{slug}",
    ]
    assert cli_in_process.ok("idp", "list", slug).stdout == (
        f"{slug}.saml\t{slug}\tsaml\t{saml_idp.entity_id}\t-\tbind=email\tjit\n"
    )
    with Session(create_engine(cli_in_process.url)) as session:
        row = session.exec(select(IdPConnection).where(IdPConnection.id == f"{slug}.saml")).one()
    assert row.saml_email_verified and row.saml_metadata == saml_idp.metadata()
    file = tmp_path / "idp-metadata.xml"
    file.write_text(saml_idp.metadata())
    cli_in_process.ok("idp", "add", slug, "--saml-metadata", str(file), "--name", "okta-saml")
    assert f"{slug}.okta-saml\t{slug}\tsaml\t{saml_idp.entity_id}\t-\tbind=externalId\tno-jit" in (
        cli_in_process.ok("idp", "list", slug).stdout
    )


def test_idp_add_saml_refuses_in_one_line(cli_in_process: Cli, saml_idp: SamlIdp, tmp_path: Path) -> None:
    slug = _partner(cli_in_process)
    cli_in_process.fails("idp", "add", slug, message="give either --oidc-issuer (OpenID Connect) or --saml-metadata "
                         "(SAML 2.0)")  # fmt: skip
    cli_in_process.fails("idp", "add", slug, "--oidc-issuer", "https://idp.example", "--saml-metadata", "x.xml",
                         message="give either --oidc-issuer (OpenID Connect) or --saml-metadata "
                         "(SAML 2.0)")  # fmt: skip
    cli_in_process.fails("idp", "add", slug, "--oidc-issuer", "https://idp.example",
                         message="an OIDC connection needs --client-id and --client-secret (or "
                         "ENTENTE_IDP_CLIENT_SECRET)")  # fmt: skip
    cli_in_process.fails("idp", "add", slug, "--saml-metadata", "http://idp.example/metadata",
                         message="the metadata URL 'http://idp.example/metadata' must use https (plain http only on "
                         "a loopback address)")  # fmt: skip
    no_certificate = tmp_path / "no-cert.xml"
    no_certificate.write_text(
        re.sub(r"<ns\d:KeyDescriptor.*?</ns\d:KeyDescriptor>", "", saml_idp.metadata(), flags=re.S)
    )
    cli_in_process.fails("idp", "add", slug, "--saml-metadata", str(no_certificate),
                         message="the IdP metadata publishes no signing certificate; Entente could not check its "
                         "signatures and refuses it (fail closed)")  # fmt: skip
    doctype = tmp_path / "doctype.xml"
    doctype.write_text('<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>' + saml_idp.metadata())
    cli_in_process.fails("idp", "add", slug, "--saml-metadata", str(doctype),
                         message="the IdP metadata contains a DTD or entity declaration (DTDForbidden); Entente "
                         "refuses DTDs and entities in SAML (XXE)")  # fmt: skip
