"""stale-access reports: reconciliation's orphans kept per workspace, and the feed-silence index

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 03:00:00.000000

reconcile_orphan holds the orphans the latest `entente workspace reconcile` of each workspace found
(the report's first section; nowhere else records them). ix_lifecycle_event_partner_occurred makes
"when did this partner's feed last change something" one index step per partner.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

import broker.types
from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('reconcile_orphan',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('workspace_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('partner_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('subject_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('remote_id', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
    sa.Column('user_name', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
    sa.Column('first_found_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspace.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('reconcile_orphan', schema=None) as batch_op:
        batch_op.create_index('ix_reconcile_orphan_partner_workspace', ['partner_id', 'workspace_id'], unique=False)
        batch_op.create_index('ix_reconcile_orphan_workspace', ['workspace_id'], unique=False)
    with op.batch_alter_table('lifecycle_event', schema=None) as batch_op:
        batch_op.create_index('ix_lifecycle_event_partner_occurred', ['partner_id', 'occurred_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('lifecycle_event', schema=None) as batch_op:
        batch_op.drop_index('ix_lifecycle_event_partner_occurred')
    with op.batch_alter_table('reconcile_orphan', schema=None) as batch_op:
        batch_op.drop_index('ix_reconcile_orphan_workspace')
        batch_op.drop_index('ix_reconcile_orphan_partner_workspace')
    op.drop_table('reconcile_orphan')
