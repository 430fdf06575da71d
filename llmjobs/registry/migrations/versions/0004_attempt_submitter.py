"""attempts.submitter_host/pid: an attempt left "submitting" by a killed submitter is lost at once;
steps.attempts_count/first_started_at/last_ended_at: a finished step's summary, so status reads no attempts;
shards (step_id, status) index: status counts per step from the index

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.add_column(sa.Column("submitter_host", sa.String(length=200), nullable=True))
        batch.add_column(sa.Column("submitter_pid", sa.Integer(), nullable=True))
    with op.batch_alter_table("shards") as batch:
        batch.create_index("ix_shards_step_id_status", ["step_id", "status"], unique=False)
    with op.batch_alter_table("steps") as batch:
        batch.add_column(sa.Column("attempts_count", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("first_started_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("last_ended_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("steps") as batch:
        batch.drop_column("last_ended_at")
        batch.drop_column("first_started_at")
        batch.drop_column("attempts_count")
    with op.batch_alter_table("shards") as batch:
        batch.drop_index("ix_shards_step_id_status")
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("submitter_pid")
        batch.drop_column("submitter_host")
