"""Partner IT's view (RFC 7644 §3, §4): scim2-client 0.13.2 drives Entente as a real process.

A partner's provisioning script would do exactly this: ``discover()`` the server, then create,
query, search, replace, patch, bulk and delete through the client's typed models, which validate
every response against the schemas we publish. The state after each step is read back through
the client, never from our database.

The partner enforces its verified domain (no ``--warn-only``): the data here is ours and lies in
it. The domain is ``<slug>.example.com`` because scim2-client validates emails with
email-validator, which refuses RFC 6761 names such as ``.test``.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from httpx2 import Client
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_models import (
    BulkOperation,
    BulkRequest,
    InvalidValueException,
    ListResponse,
    NotFoundException,
    PatchOp,
    PatchOperation,
    PreconditionFailedException,
    Resource,
    SearchRequest,
    UniquenessException,
)

from tests.conftest import ENTERPRISE_SCHEMA
from tests.peers.entente_process import EntenteProcess, PartnerCredentials

pytestmark = pytest.mark.peer


@pytest.fixture(scope="module")
def partner(entente_process: EntenteProcess) -> PartnerCredentials:
    return entente_process.add_partner(prefix="client", warn_only=False, tld="example.com")


@pytest.fixture(scope="module")
def scim(entente_process: EntenteProcess, partner: PartnerCredentials) -> Iterator[SyncSCIMClient]:
    """A discovered scim2-client on the partner's token, as partner IT would set it up."""
    http = Client(base_url=entente_process.base_url, headers={"Authorization": f"Bearer {partner.token}"}, timeout=30.0)
    client = SyncSCIMClient(http)
    client.discover()
    yield client
    http.close()
    entente_process.assert_alive()


def typed(generic: Any, *models: Any) -> Any:
    """``generic[models]`` for models only known at run time (discovery builds them), as scim2-tester does."""
    return generic[models[0] if len(models) == 1 else models[0] | models[1]]


class World:
    """The models discovery built, and a unique name space per test.

    The models exist only at run time, so mypy sees them, and the client calls returning them, as Any.
    """

    def __init__(self, scim: SyncSCIMClient, domain: str) -> None:
        self.scim: Any = scim
        self.domain = domain
        self.tag = uuid.uuid4().hex[:8]
        user_model = scim.get_resource_model("User")
        group_model = scim.get_resource_model("Group")
        assert user_model is not None and group_model is not None
        self.User: Any = user_model
        self.Group: Any = group_model
        self.Enterprise: Any = user_model.get_extension_models()[ENTERPRISE_SCHEMA]

    def email(self, local: str) -> str:
        return f"{local}.{self.tag}@{self.domain}"

    def new_user(self, local: str, **attributes: Any) -> Any:
        email = {"value": self.email(local), "type": "work", "primary": True}
        return self.User.model_validate({"userName": self.email(local), "emails": [email], **attributes})

    def create_user(self, local: str, **attributes: Any) -> Any:
        created = self.scim.create(self.new_user(local, **attributes))
        assert isinstance(created, self.User), created
        return created

    def users(self, filter: str, **params: Any) -> ListResponse[Any]:
        response = self.scim.query(self.User, query_parameters=SearchRequest(filter=filter, **params))
        assert isinstance(response, ListResponse), response
        return response


@pytest.fixture
def world(scim: SyncSCIMClient, partner: PartnerCredentials) -> World:
    return World(scim, partner.domain)


def names(response: ListResponse[Any]) -> list[str]:
    return [r.user_name for r in response.resources or []]


def test_discovery_describes_what_we_serve(scim: SyncSCIMClient) -> None:
    """RFC 7644 §4: the client negotiates from these, so each announced feature is checked below."""
    config: Any = scim.provider.config
    assert config is not None
    assert config.patch.supported and config.bulk.supported
    assert config.sort.supported and config.etag.supported
    assert config.filter.supported and config.filter.max_results
    assert config.bulk.max_operations and config.bulk.max_payload_size
    assert config.change_password.supported is False  # passwords are discarded, never stored
    assert [s.type for s in config.authentication_schemes] == ["oauthbearertoken"]
    by_name: dict[str | None, Any] = {rt.name: rt for rt in scim.provider.resource_types}
    assert set(by_name) == {"User", "Group"}
    extensions = by_name["User"].schema_extensions
    assert [(e.schema_, e.required) for e in extensions] == [(ENTERPRISE_SCHEMA, False)]


def test_user_with_enterprise_extension_round_trips(world: World) -> None:
    user = world.new_user(
        "bjensen",
        externalId=f"ext-{world.tag}",
        displayName="Babs Jensen",
        name={"givenName": "Barbara", "familyName": "Jensen"},
    )
    user[world.Enterprise] = world.Enterprise(employee_number="701984", department="Tour Operations")
    created = world.scim.create(user)
    assert isinstance(created, world.User)
    assert created.id and created.meta.resource_type == "User" and created.meta.version == 'W/"1"'
    assert created.meta.location.endswith(f"/Users/{created.id}")
    assert created.active is True  # absent on create means active
    assert created[world.Enterprise].employee_number == "701984"
    assert created[world.Enterprise].department == "Tour Operations"

    read = world.scim.query(world.User, created.id)
    assert isinstance(read, world.User)
    assert (read.user_name, read.external_id, read.name.family_name) == (
        world.email("bjensen"),
        f"ext-{world.tag}",
        "Jensen",
    )
    assert read[world.Enterprise].employee_number == "701984"


def test_filters_as_idps_send_them(world: World) -> None:
    """RFC 7644 §3.4.2.2, with the forms Entra and Okta use to match existing accounts."""
    alice = world.create_user("alice", externalId=f"a-{world.tag}", name={"familyName": "Archer"})
    bob = world.create_user("bob", active=False, name={"familyName": "Baker"})
    carol = world.create_user("carol", name={"familyName": "Carter"})
    carol[world.Enterprise] = world.Enterprise(employee_number=f"E-{world.tag}")
    carol = world.scim.replace(carol)
    mine = f'userName co "{world.tag}"'

    assert names(world.users(f'userName eq "{world.email("ALICE").upper()}"')) == [alice.user_name]
    assert names(world.users(f'externalId eq "a-{world.tag}"')) == [alice.user_name]
    assert names(world.users(f'externalId eq "A-{world.tag.upper()}"')) == []  # caseExact
    assert names(world.users(f'emails[type eq "work"].value eq "{world.email("bob")}"')) == [bob.user_name]
    assert names(world.users(f'{ENTERPRISE_SCHEMA}:employeeNumber eq "E-{world.tag}"')) == [carol.user_name]
    assert names(world.users(f"{mine} and active eq false")) == [bob.user_name]
    active_c = f'{mine} and not (active eq false) and name.familyName sw "c"'
    assert names(world.users(active_c)) == [carol.user_name]
    a_or_b = f'{mine} and (name.familyName eq "Archer" or name.familyName eq "Baker")'
    descending = world.users(a_or_b, sort_by="name.familyName", sort_order="descending")
    assert names(descending) == [bob.user_name, alice.user_name]
    assert names(world.users(f"{mine} and externalId pr")) == [alice.user_name]
    nobody = world.users(f'userName eq "nobody.{world.tag}@{world.domain}"')
    assert (nobody.total_results, nobody.resources) == (0, None)

    page = world.users(mine, sort_by="userName", start_index=2, count=1)
    assert (page.total_results, page.start_index, page.items_per_page) == (3, 2, 1)
    assert names(page) == [bob.user_name]


def test_search_request_post(world: World) -> None:
    """RFC 7644 §3.4.3 POST /.search keeps PII out of URLs; attributes trim the answer (§3.9)."""
    for local, family in (("dora", "Dunn"), ("ed", "Evans"), ("flo", "Ford")):
        world.create_user(local, name={"familyName": family})
    request: SearchRequest[Any] = SearchRequest(
        filter=f'userName co "{world.tag}"',
        sort_by="name.familyName",
        sort_order="descending",
        start_index=1,
        count=2,
        attributes=["userName", "name.familyName"],
    )
    response = world.scim.search(world.User, request)
    assert isinstance(response, ListResponse) and response.resources is not None
    assert (response.total_results, response.items_per_page) == (3, 2)
    assert [(r.user_name, r.name.family_name) for r in response.resources] == [
        (world.email("flo"), "Ford"),
        (world.email("ed"), "Evans"),
    ]
    assert all(r.emails is None and r.active is None for r in response.resources)  # not asked for

    group = world.scim.create(world.Group.model_validate({"displayName": f"Searchers {world.tag}"}))
    # Root search over both types; each type lacks one of the two attributes, which then has no
    # value there (RFC 7644 §3.4.2.2) instead of refusing or emptying that type's half.
    either = f'displayName co "{world.tag}" or userName co "{world.tag}"'
    both = world.scim.search(SearchRequest(filter=either))
    assert isinstance(both, ListResponse) and both.resources is not None
    found = {(r.meta.resource_type, r.id) for r in both.resources}
    assert both.total_results == 4 and len(found) == 4
    assert ("Group", group.id) in found


def test_replace_and_modify(world: World) -> None:
    """PUT replaces every readWrite attribute (§3.5.1); PATCH applies operations in order (§3.5.2)."""
    user = world.create_user("gina", nickName="G", title="Engineer")
    user.nick_name = None
    user.title = "Staff engineer"
    user[world.Enterprise] = world.Enterprise(department="R&D")
    replaced = world.scim.replace(user)
    assert isinstance(replaced, world.User)
    assert replaced.nick_name is None and replaced.title == "Staff engineer"
    assert replaced[world.Enterprise].department == "R&D"
    assert replaced.meta.version == 'W/"2"'

    patch = typed(PatchOp, world.User)(
        operations=[
            PatchOperation(op="replace", path="active", value=False),
            PatchOperation(op="add", path="nickName", value="Gee"),
            PatchOperation(op="replace", path=f"{ENTERPRISE_SCHEMA}:department", value="Ops"),
            PatchOperation(op="add", path="emails", value=[{"value": world.email("gina.home"), "type": "home"}]),
            PatchOperation(op="remove", path='emails[type eq "work"]'),
        ]
    )
    patched = world.scim.modify(world.User, replaced.id, patch)
    assert isinstance(patched, world.User)
    assert patched.active is False and patched.nick_name == "Gee"
    assert patched[world.Enterprise].department == "Ops"
    assert [(e.value, e.type) for e in patched.emails] == [(world.email("gina.home"), "home")]
    again = world.scim.query(world.User, replaced.id)
    assert (again.active, again.nick_name, again.meta.version) == (False, "Gee", 'W/"3"')


def test_group_with_members(world: World) -> None:
    """Groups are created with members (Okta AIW), patched by member (Entra, Okta), replaced (PUT)."""
    ann, ben, cat = (world.create_user(n) for n in ("ann", "ben", "cat"))
    group = world.scim.create(
        world.Group.model_validate(
            {
                "displayName": f"Tour Guides {world.tag}",
                "members": [{"value": ann.id, "type": "User"}, {"value": ben.id, "type": "User"}],
            }
        )
    )
    assert isinstance(group, world.Group)
    assert sorted(m.value for m in group.members) == sorted([ann.id, ben.id])
    assert {m.display for m in group.members} == {ann.user_name, ben.user_name}
    assert [g.value for g in world.scim.query(world.User, ann.id).groups] == [group.id]

    found = world.scim.search(
        world.Group,
        SearchRequest(filter=f'displayName eq "tour guides {world.tag}"', excluded_attributes=["members"]),
    )
    assert [(g.id, g.members) for g in found.resources] == [(group.id, None)]

    patch = typed(PatchOp, world.Group)(
        operations=[
            PatchOperation(op="remove", path=f'members[value eq "{ann.id}"]'),
            PatchOperation(op="add", path="members", value=[{"value": cat.id}]),
            PatchOperation(op="replace", path="displayName", value=f"Guides {world.tag}"),
        ]
    )
    patched = world.scim.modify(world.Group, group.id, patch)
    assert patched.display_name == f"Guides {world.tag}"
    assert sorted(m.value for m in patched.members) == sorted([ben.id, cat.id])
    assert world.scim.query(world.User, ann.id).groups is None

    patched.members = [world.Group.Members(value=ann.id, type="User")]
    replaced = world.scim.replace(patched)
    assert [m.value for m in replaced.members] == [ann.id]
    assert world.scim.query(world.User, ben.id).groups is None

    assert world.scim.delete(world.Group, group.id) is None
    assert world.scim.query(world.User, ann.id).groups is None
    with pytest.raises(NotFoundException):
        world.scim.query(world.Group, group.id)


def test_bulk_with_forward_references(world: World) -> None:
    """RFC 7644 §3.7: bulkId references resolve; each operation reports its own status."""
    guide = world.new_user("hal")
    retitle = typed(PatchOp, world.User)(operations=[PatchOperation(op="replace", path="title", value="Guide")])
    bulk_group = world.Group.model_validate(
        {"displayName": f"Bulk {world.tag}", "members": [{"value": "bulkId:hal", "type": "User"}]}
    )
    request = typed(BulkRequest, world.User, world.Group)(
        operations=[
            typed(BulkOperation, world.Group)(method="POST", path="/Groups", bulk_id="guides", data=bulk_group),
            typed(BulkOperation, world.User)(method="POST", path="/Users", bulk_id="hal", data=guide),
            typed(BulkOperation, world.User)(method="PATCH", path="/Users/bulkId:hal", data=retitle),
        ]
    )
    response = world.scim.bulk(request)
    statuses = [(op.method.value, op.bulk_id, op.status) for op in response.operations]
    expected = [("POST", "guides", 201), ("POST", "hal", 201), ("PATCH", None, 200)]
    assert sorted(statuses, key=str) == sorted(expected, key=str)
    user_location = next(op.location for op in response.operations if op.bulk_id == "hal")
    user_id = user_location.rsplit("/", 1)[1]
    user = world.scim.query(world.User, user_id)
    assert (user.user_name, user.title) == (world.email("hal"), "Guide")
    assert [g.display for g in user.groups] == [f"Bulk {world.tag}"]


def test_etags_guard_concurrent_writes(world: World) -> None:
    """RFC 7644 §3.14: the client sends If-Match from meta.version; a stale one is refused with 412."""
    user = world.create_user("ida")
    same = world.scim.query(user)  # If-None-Match with the current version: 304, the object comes back
    assert same is user
    user.title = "first"
    assert world.scim.replace(user).meta.version == 'W/"2"'
    user.title = "second, from a stale copy"
    with pytest.raises(PreconditionFailedException):
        world.scim.replace(user)
    assert world.scim.query(world.User, user.id).title == "first"


def test_errors_reach_the_client_typed(world: World) -> None:
    """RFC 7644 §3.12: each refusal is an Error the client maps to its exception with the scimType."""
    world.create_user("jo")
    with pytest.raises(UniquenessException):
        world.scim.create(world.new_user("JO"))
    outsider = world.User.model_validate({"userName": f"jo.{world.tag}@elsewhere.example.org"})
    with pytest.raises(InvalidValueException, match="outside the verified domains"):
        world.scim.create(outsider)
    with pytest.raises(NotFoundException):
        world.scim.query(world.User, str(uuid.uuid4()))


def test_delete(world: World) -> None:
    """RFC 7644 §3.6: 204, then 404 on every read; other users are untouched."""
    kim, lee = world.create_user("kim"), world.create_user("lee")
    assert world.scim.delete(world.User, kim.id) is None
    with pytest.raises(NotFoundException):
        world.scim.query(world.User, kim.id)
    with pytest.raises(NotFoundException):
        world.scim.delete(world.User, kim.id)
    assert names(world.users(f'userName co "{world.tag}"')) == [lee.user_name]
    assert isinstance(world.scim.query(world.User, lee.id), Resource)
