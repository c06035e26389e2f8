"""verifiable audit log: RFC 9162 Merkle tree over audit_record, signed checkpoints, partner cosignatures

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 19:00:00

A trigger queues every new audit_record in audit_pending in the writer's own transaction; the
checkpointer gives queued records leaf indices in audit_leaf (commit order, not id order) and
stores the hashes of complete subtrees in audit_node. audit_leaf, audit_node, audit_checkpoint and
audit_cosignature are append-only at the database, like audit_record. Records written before this
revision are queued here, so they enter the tree at the first run.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import broker.types


revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_APPEND_ONLY = ('audit_leaf', 'audit_node', 'audit_checkpoint', 'audit_cosignature')


def upgrade() -> None:
    op.create_table('audit_tree',
    sa.Column('id', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('audit_pending',
    sa.Column('record_id', sa.Integer(), autoincrement=False, nullable=False),
    sa.ForeignKeyConstraint(['record_id'], ['audit_record.id'], ),
    sa.PrimaryKeyConstraint('record_id')
    )
    op.create_table('audit_leaf',
    sa.Column('leaf_index', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('record_id', sa.Integer(), nullable=False),
    sa.Column('partner_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('sequenced_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['record_id'], ['audit_record.id'], ),
    sa.PrimaryKeyConstraint('leaf_index'),
    sa.UniqueConstraint('record_id')
    )
    with op.batch_alter_table('audit_leaf', schema=None) as batch_op:
        batch_op.create_index('ix_audit_leaf_partner', ['partner_id', 'leaf_index'], unique=False)

    op.create_table('audit_node',
    sa.Column('id', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('hash', sa.LargeBinary(length=32), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('audit_checkpoint',
    sa.Column('tree_size', sa.Integer(), autoincrement=False, nullable=False),
    sa.Column('root_hash', sa.LargeBinary(length=32), nullable=False),
    sa.Column('signed_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('key_id', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
    sa.Column('verifier_key', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=False),
    sa.Column('note', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('tree_size')
    )
    op.create_table('audit_partner_key',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('partner_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('key_id', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
    sa.Column('public_key', sa.LargeBinary(length=32), nullable=False),
    sa.Column('created_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('name', 'key_id', name='uq_audit_partner_key_name_id')
    )
    with op.batch_alter_table('audit_partner_key', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_partner_key_partner_id'), ['partner_id'], unique=False)

    op.create_table('audit_cosignature',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('tree_size', sa.Integer(), nullable=False),
    sa.Column('key_ref', sa.Integer(), nullable=False),
    sa.Column('partner_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('cosigned_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('line', sa.Text(), nullable=False),
    sa.ForeignKeyConstraint(['key_ref'], ['audit_partner_key.id'], ),
    sa.ForeignKeyConstraint(['tree_size'], ['audit_checkpoint.tree_size'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('tree_size', 'key_ref', name='uq_audit_cosignature_checkpoint_key')
    )
    with op.batch_alter_table('audit_cosignature', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_audit_cosignature_tree_size'), ['tree_size'], unique=False)

    op.execute("INSERT INTO audit_tree (id, size) VALUES (1, 0)")
    op.execute("INSERT INTO audit_pending (record_id) SELECT id FROM audit_record")
    _triggers()


def _triggers() -> None:
    """Queue each new record for the tree; refuse UPDATE and DELETE on the tree's own tables."""
    if op.get_bind().dialect.name == "postgresql":
        op.execute(
            "CREATE FUNCTION audit_record_enqueue() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN INSERT INTO audit_pending (record_id) VALUES (NEW.id); RETURN NULL; END $$"
        )
        op.execute(
            "CREATE TRIGGER audit_record_enqueue AFTER INSERT ON audit_record "
            "FOR EACH ROW EXECUTE FUNCTION audit_record_enqueue()"
        )
        op.execute(
            "CREATE FUNCTION audit_tree_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
            "BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$"
        )
        for table in _APPEND_ONLY:
            op.execute(
                f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION audit_tree_append_only()"
            )
        return
    op.execute(
        "CREATE TRIGGER audit_record_enqueue AFTER INSERT ON audit_record "
        "BEGIN INSERT INTO audit_pending (record_id) VALUES (NEW.id); END"
    )
    for table in _APPEND_ONLY:
        for verb in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_no_{verb.lower()} BEFORE {verb} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
            )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_record_enqueue ON audit_record")
        op.execute("DROP FUNCTION IF EXISTS audit_record_enqueue()")
        for table in _APPEND_ONLY:
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
        op.execute("DROP FUNCTION IF EXISTS audit_tree_append_only()")
    else:
        op.execute("DROP TRIGGER IF EXISTS audit_record_enqueue")
        for table in _APPEND_ONLY:
            for verb in ("update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {table}_no_{verb}")
    with op.batch_alter_table('audit_cosignature', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_cosignature_tree_size'))

    op.drop_table('audit_cosignature')
    with op.batch_alter_table('audit_partner_key', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_audit_partner_key_partner_id'))

    op.drop_table('audit_partner_key')
    op.drop_table('audit_checkpoint')
    op.drop_table('audit_node')
    with op.batch_alter_table('audit_leaf', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_leaf_partner')

    op.drop_table('audit_leaf')
    op.drop_table('audit_pending')
    op.drop_table('audit_tree')
