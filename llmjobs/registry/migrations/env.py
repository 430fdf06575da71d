"""Alembic environment: runs on the connection that ``llmjobs.registry.migrate`` hands over."""

from alembic import context

from llmjobs.registry.models import Base

connection = context.config.attributes.get("connection")
if connection is None:  # `alembic` CLI use: open the configured registry
    from llmjobs import settings
    from llmjobs.registry.store import make_engine

    connection = make_engine(settings.registry_url()).connect()

context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
