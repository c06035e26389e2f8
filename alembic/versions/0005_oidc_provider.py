"""OpenID Provider: clients, authorization codes, token families, access/refresh tokens, signing keys,
back-channel logout notifications

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 18:54:15.012132

Written as a branch from 0002 beside the federated-login revision and chained after it (0004); no
foreign key reaches login_session, so the order of the two does not matter.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

import broker.types
from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('oidc_signing_key',
    sa.Column('kid', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('alg', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('public_jwk', sa.JSON(), nullable=False),
    sa.Column('private_sealed', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('created_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('active_from', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('kid')
    )
    op.create_table('oauth_client',
    sa.Column('client_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('workspace_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('secret_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.Column('redirect_uris', sa.JSON(), nullable=False),
    sa.Column('post_logout_redirect_uris', sa.JSON(), nullable=False),
    sa.Column('backchannel_logout_uri', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=True),
    sa.Column('scopes', sa.JSON(), nullable=False),
    sa.Column('created_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['workspace_id'], ['workspace.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('client_id')
    )
    with op.batch_alter_table('oauth_client', schema=None) as batch_op:
        batch_op.create_index('ix_oauth_client_workspace', ['workspace_id'], unique=False)

    op.create_table('oauth_authorization_code',
    sa.Column('code_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('client_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('partner_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('subject_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('session_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('redirect_uri', sqlmodel.sql.sqltypes.AutoString(length=2000), nullable=False),
    sa.Column('scope', sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
    sa.Column('nonce', sqlmodel.sql.sqltypes.AutoString(length=512), nullable=True),
    sa.Column('code_challenge', sqlmodel.sql.sqltypes.AutoString(length=128), nullable=True),
    sa.Column('code_challenge_method', sqlmodel.sql.sqltypes.AutoString(length=8), nullable=True),
    sa.Column('auth_time', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('used_at', broker.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('family_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=True),
    sa.ForeignKeyConstraint(['client_id'], ['oauth_client.client_id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('code_sha256')
    )
    with op.batch_alter_table('oauth_authorization_code', schema=None) as batch_op:
        batch_op.create_index('ix_oauth_authorization_code_nonce', ['client_id', 'nonce'], unique=False)

    op.create_table('oauth_token_family',
    sa.Column('id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('client_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('partner_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('subject_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('session_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('scope', sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=False),
    sa.Column('created_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', broker.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('revoke_reason', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True),
    sa.ForeignKeyConstraint(['client_id'], ['oauth_client.client_id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['partner_id'], ['partner.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('oauth_token_family', schema=None) as batch_op:
        batch_op.create_index('ix_oauth_token_family_session', ['session_id'], unique=False)
        batch_op.create_index('ix_oauth_token_family_subject', ['partner_id', 'subject_id'], unique=False)

    op.create_table('oidc_logout_notification',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('jti', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('client_id', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('partner_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('subject_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('sid', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('reason', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('state', sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('not_before', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('lease_until', broker.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('queued_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('delivered_at', broker.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_error', sqlmodel.sql.sqltypes.AutoString(length=1000), nullable=True),
    sa.ForeignKeyConstraint(['client_id'], ['oauth_client.client_id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('jti'),
    sqlite_autoincrement=True
    )
    with op.batch_alter_table('oidc_logout_notification', schema=None) as batch_op:
        batch_op.create_index('ix_oidc_logout_notification_due', ['state', 'not_before'], unique=False)

    op.create_table('oauth_access_token',
    sa.Column('jti', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('family_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('issued_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', broker.types.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['family_id'], ['oauth_token_family.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('jti')
    )
    with op.batch_alter_table('oauth_access_token', schema=None) as batch_op:
        batch_op.create_index('ix_oauth_access_token_family', ['family_id'], unique=False)

    op.create_table('oauth_refresh_token',
    sa.Column('token_sha256', sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
    sa.Column('family_id', sqlmodel.sql.sqltypes.AutoString(length=36), nullable=False),
    sa.Column('issued_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('rotated_at', broker.types.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['family_id'], ['oauth_token_family.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('token_sha256')
    )
    with op.batch_alter_table('oauth_refresh_token', schema=None) as batch_op:
        batch_op.create_index('ix_oauth_refresh_token_family', ['family_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('oauth_refresh_token', schema=None) as batch_op:
        batch_op.drop_index('ix_oauth_refresh_token_family')

    op.drop_table('oauth_refresh_token')
    with op.batch_alter_table('oauth_access_token', schema=None) as batch_op:
        batch_op.drop_index('ix_oauth_access_token_family')

    op.drop_table('oauth_access_token')
    with op.batch_alter_table('oidc_logout_notification', schema=None) as batch_op:
        batch_op.drop_index('ix_oidc_logout_notification_due')

    op.drop_table('oidc_logout_notification')
    with op.batch_alter_table('oauth_token_family', schema=None) as batch_op:
        batch_op.drop_index('ix_oauth_token_family_subject')
        batch_op.drop_index('ix_oauth_token_family_session')

    op.drop_table('oauth_token_family')
    with op.batch_alter_table('oauth_authorization_code', schema=None) as batch_op:
        batch_op.drop_index('ix_oauth_authorization_code_nonce')

    op.drop_table('oauth_authorization_code')
    with op.batch_alter_table('oauth_client', schema=None) as batch_op:
        batch_op.drop_index('ix_oauth_client_workspace')

    op.drop_table('oauth_client')
    op.drop_table('oidc_signing_key')
