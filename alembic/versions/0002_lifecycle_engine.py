"""workspaces, policies, grants and the delivery outbox

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 18:29:25.038302
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

import broker.types
from alembic import op


revision: str = '0002'
down_revision: str | None = '0001'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('lifecycle_event', schema=None) as batch_op:
        batch_op.add_column(sa.Column('consumed', sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.create_index(
            'ix_lifecycle_event_unconsumed', ['id'], unique=False,
            sqlite_where=sa.text('consumed = 0'), postgresql_where=sa.text('consumed = false'),
        )
    op.create_table('engine_cursor',
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('last_event_id', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('policy_version',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('documents', sa.JSON(), nullable=False),
    sa.Column('sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('applied_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('applied_by', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('workspace',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('slug', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('connector', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('config_public', sa.JSON(), nullable=False),
    sa.Column('config_sealed', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('role_groups', sa.JSON(), nullable=False),
    sa.Column('attribute_map', sa.JSON(), nullable=False),
    sa.Column('on_leave', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('rate_per_second', sa.Float(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('status_reason', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
    sa.Column('created_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('slug')
    )
    op.create_table('access_grant',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('partner_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('subject_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('workspace_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('role', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('rule_id', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
    sa.Column('until', broker.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('spec_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('granted_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspace.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('partner_id', 'subject_id', 'workspace_id', name='uq_access_grant_subject_workspace')
    )
    with op.batch_alter_table('access_grant', schema=None) as batch_op:
        batch_op.create_index('ix_access_grant_until', ['until'], unique=False)
        batch_op.create_index('ix_access_grant_workspace', ['workspace_id'], unique=False)

    op.create_table('delivery_receipt',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('task_id', sa.Integer(), nullable=False),
    sa.Column('workspace_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('partner_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('subject_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('action', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('outcome', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('remote_id', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('cause', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('accepted_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('first_attempt_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('done_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspace.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('delivery_receipt', schema=None) as batch_op:
        batch_op.create_index('ix_delivery_receipt_subject', ['partner_id', 'subject_id'], unique=False)
        batch_op.create_index('ix_delivery_receipt_workspace_done', ['workspace_id', 'done_at'], unique=False)

    op.create_table('delivery_task',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('workspace_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('partner_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('subject_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('action', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('spec', sa.JSON(), nullable=True),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('not_before', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('lease_until', broker.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('cause', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('accepted_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('first_attempt_at', broker.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_error', sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=True),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspace.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sqlite_autoincrement=True,  # a task id is the op_id workspaces deduplicate on: never hand one out twice
    )
    with op.batch_alter_table('delivery_task', schema=None) as batch_op:
        batch_op.create_index('ix_delivery_task_due', ['state', 'not_before'], unique=False)
        batch_op.create_index('ix_delivery_task_pair', ['workspace_id', 'subject_id', 'id'], unique=False)

    op.create_table('workspace_account',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('workspace_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('partner_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('subject_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('remote_id', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('updated_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspace.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('workspace_id', 'partner_id', 'subject_id', name='uq_workspace_account_subject')
    )


def downgrade() -> None:
    with op.batch_alter_table('lifecycle_event', schema=None) as batch_op:
        batch_op.drop_index('ix_lifecycle_event_unconsumed')
        batch_op.drop_column('consumed')
    op.drop_table('workspace_account')
    with op.batch_alter_table('delivery_task', schema=None) as batch_op:
        batch_op.drop_index('ix_delivery_task_pair')
        batch_op.drop_index('ix_delivery_task_due')

    op.drop_table('delivery_task')
    with op.batch_alter_table('delivery_receipt', schema=None) as batch_op:
        batch_op.drop_index('ix_delivery_receipt_workspace_done')
        batch_op.drop_index('ix_delivery_receipt_subject')

    op.drop_table('delivery_receipt')
    with op.batch_alter_table('access_grant', schema=None) as batch_op:
        batch_op.drop_index('ix_access_grant_workspace')
        batch_op.drop_index('ix_access_grant_until')

    op.drop_table('access_grant')
    op.drop_table('workspace')
    op.drop_table('policy_version')
    op.drop_table('engine_cursor')
