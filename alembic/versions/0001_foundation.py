"""foundation: partners, SCIM resources, lifecycle events, audit

Revision ID: 0001
Revises: 
Create Date: 2026-11-23 15:39:03.753716
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import broker.types


revision: str = '0001'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _folded(length: int) -> sa.types.TypeEngine:
    """A folded (``*_ci``) column: bytewise comparison on both databases (broker.scim.models.folded)."""
    return sa.String(length=length).with_variant(sa.String(length=length, collation="C"), "postgresql")


def _trigram_index(batch_op, name: str, column: str) -> None:
    """A pg_trgm GIN index on PostgreSQL; declared empty on SQLite (broker.scim.models.trigram_index)."""
    batch_op.create_index(
        name,
        [column],
        unique=False,
        postgresql_using="gin",
        postgresql_ops={column: "gin_trgm_ops"},
        sqlite_where=sa.text("0"),
    )


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # Trigram indexes for SCIM co/sw/ew filters. pg_trgm ships with PostgreSQL (contrib) and is a
        # trusted extension: the database owner may create it.
        op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.create_table('audit_record',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('occurred_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('partner_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('actor_kind', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('actor_id', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('action', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('resource_type', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=True),
    sa.Column('resource_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('before_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('after_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.Column('leaf_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('audit_record', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_record_partner_id'), ['partner_id'], unique=False)

    op.create_table('partner',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('slug', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('domain_policy', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('created_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('slug')
    )
    op.create_table('lifecycle_event',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('partner_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('kind', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('subject_type', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('subject_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('detail', sa.JSON(), nullable=False),
    sa.Column('occurred_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('audit_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['audit_id'], ['audit_record.id'], ),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('lifecycle_event', schema=None) as batch_op:
        batch_op.create_index('ix_lifecycle_event_partner_subject', ['partner_id', 'subject_id'], unique=False)

    op.create_table('partner_domain',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('partner_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('domain', sqlmodel.sql.sqltypes.AutoString(length=253), nullable=False),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('domain')
    )
    with op.batch_alter_table('partner_domain', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_partner_domain_partner_id'), ['partner_id'], unique=False)

    op.create_table('scim_group',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('partner_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('attributes', sa.JSON(), nullable=False),
    sa.Column('display_name', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=False),
    sa.Column('display_name_ci', _folded(512), nullable=False),
    sa.Column('external_id', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('pk'),
    sa.UniqueConstraint('id'),
    sa.UniqueConstraint('partner_id', 'display_name_ci', name='uq_scim_group_partner_display_name')
    )
    with op.batch_alter_table('scim_group', schema=None) as batch_op:
        batch_op.create_index('ix_scim_group_partner_external_id', ['partner_id', 'external_id'], unique=False)
        batch_op.create_index('ix_scim_group_partner_pk', ['partner_id', 'pk'], unique=False)

    op.create_table('scim_token',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('partner_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('secret_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('label', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
    sa.Column('created_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', broker.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_used_at', broker.types.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('scim_token', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_scim_token_partner_id'), ['partner_id'], unique=False)

    op.create_table('scim_user',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('partner_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('joined_at', broker.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('attributes', sa.JSON(), nullable=False),
    sa.Column('user_name', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=False),
    sa.Column('user_name_ci', _folded(512), nullable=False),
    sa.Column('external_id', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('display_name', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
    sa.Column('nick_name', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
    sa.Column('title', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
    sa.Column('user_type', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
    sa.Column('preferred_language', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('locale', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('timezone', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('profile_url', sqlmodel.sql.sqltypes.AutoString(length=2048), nullable=True),
    sa.Column('name_formatted', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
    sa.Column('name_family_name', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
    sa.Column('name_given_name', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
    sa.Column('name_middle_name', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
    sa.Column('name_honorific_prefix', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
    sa.Column('name_honorific_suffix', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
    sa.Column('employee_number', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
    sa.Column('cost_center', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
    sa.Column('organization', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
    sa.Column('division', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
    sa.Column('department', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
    sa.Column('manager_id', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('pk'),
    sa.UniqueConstraint('id'),
    sa.UniqueConstraint('partner_id', 'user_name_ci', name='uq_scim_user_partner_user_name')
    )
    with op.batch_alter_table('scim_user', schema=None) as batch_op:
        batch_op.create_index('ix_scim_user_partner_external_id', ['partner_id', 'external_id'], unique=False)
        batch_op.create_index('ix_scim_user_partner_pk', ['partner_id', 'pk'], unique=False)
        _trigram_index(batch_op, 'ix_scim_user_user_name_trgm', 'user_name_ci')
        _trigram_index(batch_op, 'ix_scim_user_display_name_trgm', 'display_name')
        _trigram_index(batch_op, 'ix_scim_user_family_name_trgm', 'name_family_name')
        _trigram_index(batch_op, 'ix_scim_user_given_name_trgm', 'name_given_name')
    if op.get_bind().dialect.name == "postgresql":
        # Room in every page for a new row version, so a PATCH that changes no indexed column (title,
        # active, ...) is a HOT update: no entry in any of the table's nine indexes.
        op.execute("ALTER TABLE scim_user SET (fillfactor = 80)")

    op.create_table('group_member',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('partner_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('group_pk', sa.Integer(), nullable=False),
    sa.Column('member_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('member_type', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
    sa.Column('display', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
    sa.ForeignKeyConstraint(['group_pk'], ['scim_group.pk'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('pk'),
    sa.UniqueConstraint('group_pk', 'member_id', name='uq_group_member')
    )
    with op.batch_alter_table('group_member', schema=None) as batch_op:
        batch_op.create_index('ix_group_member_member', ['partner_id', 'member_id'], unique=False)

    op.create_table('scim_value',
    sa.Column('pk', sa.Integer(), nullable=False),
    sa.Column('partner_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('user_pk', sa.Integer(), nullable=False),
    sa.Column('attribute', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('value', sa.String(length=4096), nullable=True),
    sa.Column('value_ci', _folded(4096), nullable=True),
    sa.Column('type', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
    sa.Column('primary', sa.Boolean(), nullable=False),
    sa.Column('display', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
    sa.ForeignKeyConstraint(['user_pk'], ['scim_user.pk'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('pk')
    )
    with op.batch_alter_table('scim_value', schema=None) as batch_op:
        batch_op.create_index('ix_scim_value_lookup', ['partner_id', 'attribute', 'value_ci'], unique=False)
        batch_op.create_index('ix_scim_value_user', ['user_pk'], unique=False)
        _trigram_index(batch_op, 'ix_scim_value_value_trgm', 'value_ci')
    _make_audit_append_only()


def _make_audit_append_only() -> None:
    """The database itself refuses UPDATE and DELETE on audit_record, whatever code runs against it."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION audit_record_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION 'audit_record is append-only'; END $$"
        )
        op.execute(
            "CREATE TRIGGER audit_record_append_only BEFORE UPDATE OR DELETE ON audit_record "
            "FOR EACH ROW EXECUTE FUNCTION audit_record_append_only()"
        )
    else:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER audit_record_no_{verb.lower()} BEFORE {verb} ON audit_record "
                "BEGIN SELECT RAISE(ABORT, 'audit_record is append-only'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_record_append_only ON audit_record")
        op.execute("DROP FUNCTION IF EXISTS audit_record_append_only()")
    with op.batch_alter_table('scim_value', schema=None) as batch_op:
        batch_op.drop_index('ix_scim_value_value_trgm')
        batch_op.drop_index('ix_scim_value_user')
        batch_op.drop_index('ix_scim_value_lookup')

    op.drop_table('scim_value')
    with op.batch_alter_table('group_member', schema=None) as batch_op:
        batch_op.drop_index('ix_group_member_member')

    op.drop_table('group_member')
    with op.batch_alter_table('scim_user', schema=None) as batch_op:
        batch_op.drop_index('ix_scim_user_given_name_trgm')
        batch_op.drop_index('ix_scim_user_family_name_trgm')
        batch_op.drop_index('ix_scim_user_display_name_trgm')
        batch_op.drop_index('ix_scim_user_user_name_trgm')
        batch_op.drop_index('ix_scim_user_partner_pk')
        batch_op.drop_index('ix_scim_user_partner_external_id')

    op.drop_table('scim_user')
    with op.batch_alter_table('scim_token', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_scim_token_partner_id'))

    op.drop_table('scim_token')
    with op.batch_alter_table('scim_group', schema=None) as batch_op:
        batch_op.drop_index('ix_scim_group_partner_pk')
        batch_op.drop_index('ix_scim_group_partner_external_id')

    op.drop_table('scim_group')
    with op.batch_alter_table('partner_domain', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_partner_domain_partner_id'))

    op.drop_table('partner_domain')
    with op.batch_alter_table('lifecycle_event', schema=None) as batch_op:
        batch_op.drop_index('ix_lifecycle_event_partner_subject')

    op.drop_table('lifecycle_event')
    op.drop_table('partner')
    with op.batch_alter_table('audit_record', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_record_partner_id'))

    op.drop_table('audit_record')
