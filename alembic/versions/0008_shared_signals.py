"""Shared Signals (SSF 1.0): receivers' streams and the SETs queued for them

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07 03:00:00.000000

Two tables of its own: ssf_stream references oauth_client, ssf_event references ssf_stream.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

import broker.types
from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('ssf_stream',
    sa.Column('stream_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('client_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('delivery_method', sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
    sa.Column('endpoint_url', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True),
    sa.Column('authorization_sealed', sqlmodel.sql.sqltypes.AutoString(), nullable=True),
    sa.Column('events_requested', sa.JSON(), nullable=False),
    sa.Column('description', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('status_reason', sqlmodel.sql.sqltypes.AutoString(length=500), nullable=True),
    sa.Column('last_verification_at', broker.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('created_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['client_id'], ['oauth_client.client_id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('stream_id')
    )
    with op.batch_alter_table('ssf_stream', schema=None) as batch_op:
        batch_op.create_index('ix_ssf_stream_client', ['client_id'], unique=False)

    op.create_table('ssf_event',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('jti', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('txn', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('stream_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('event_type', sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
    sa.Column('event', sa.JSON(), nullable=False),
    sa.Column('subject_format', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('subject', sqlmodel.sql.sqltypes.AutoString(length=255), nullable=False),
    sa.Column('partner_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('not_before', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('lease_until', broker.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('queued_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', broker.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_error', sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=True),
    sa.ForeignKeyConstraint(['stream_id'], ['ssf_stream.stream_id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('jti'),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('ssf_event', schema=None) as batch_op:
        batch_op.create_index('ix_ssf_event_due', ['state', 'not_before'], unique=False)
        batch_op.create_index('ix_ssf_event_stream', ['stream_id', 'state'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('ssf_event', schema=None) as batch_op:
        batch_op.drop_index('ix_ssf_event_stream')
        batch_op.drop_index('ix_ssf_event_due')

    op.drop_table('ssf_event')
    with op.batch_alter_table('ssf_stream', schema=None) as batch_op:
        batch_op.drop_index('ix_ssf_stream_client')

    op.drop_table('ssf_stream')
