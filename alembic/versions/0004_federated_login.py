"""federated login: partner IdP connections and Entente login sessions

Revision ID: 0004
Revises: 0002
Create Date: 2026-11-23 18:53:33.322089
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import broker.types


revision: str = '0004'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('idp_connection',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=130), nullable=False),
    sa.Column('partner_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('protocol', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('issuer', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
    sa.Column('saml_metadata', sa.Text(), nullable=True),
    sa.Column('client_id', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
    sa.Column('client_secret_sealed', sa.Text(), nullable=True),
    sa.Column('binding_key', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('username_claim', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('jit', sa.Boolean(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('created_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('partner_id', 'name', name='uq_idp_connection_partner_name')
    )
    with op.batch_alter_table('idp_connection', schema=None) as batch_op:
        batch_op.create_index('ix_idp_connection_partner', ['partner_id', 'created_at'], unique=False)

    op.create_table('login_session',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('secret_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('partner_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('subject_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('upstream_issuer', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=False),
    sa.Column('upstream_subject', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=False),
    sa.Column('upstream_session', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
    sa.Column('created_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('ended_at', broker.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('end_reason', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('secret_sha256')
    )
    with op.batch_alter_table('login_session', schema=None) as batch_op:
        batch_op.create_index('ix_login_session_subject', ['partner_id', 'subject_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('login_session', schema=None) as batch_op:
        batch_op.drop_index('ix_login_session_subject')

    op.drop_table('login_session')
    with op.batch_alter_table('idp_connection', schema=None) as batch_op:
        batch_op.drop_index('ix_idp_connection_partner')

    op.drop_table('idp_connection')
