"""SAML 2.0 IdP connections: the one-time-use ledger of accepted assertions, and the email vouching flag

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07 03:00:00

saml_assertion_use keeps each accepted assertion's ID per connection until it expires, so a
replayed assertion is refused by every process (its primary key makes the second insert fail).
idp_connection.saml_email_verified records that the operator vouches for a SAML IdP's addresses.
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import broker.types


revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('saml_assertion_use',
    sa.Column('connection_id', sqlmodel.sql.sqltypes.AutoString(length=130), nullable=False),
    sa.Column('assertion_id', sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
    sa.Column('expires_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('used_at', broker.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('connection_id', 'assertion_id')
    )
    with op.batch_alter_table('saml_assertion_use', schema=None) as batch_op:
        batch_op.create_index('ix_saml_assertion_use_expires', ['expires_at'], unique=False)

    with op.batch_alter_table('idp_connection', schema=None) as batch_op:
        batch_op.add_column(sa.Column('saml_email_verified', sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('idp_connection', schema=None) as batch_op:
        batch_op.drop_column('saml_email_verified')

    with op.batch_alter_table('saml_assertion_use', schema=None) as batch_op:
        batch_op.drop_index('ix_saml_assertion_use_expires')

    op.drop_table('saml_assertion_use')
