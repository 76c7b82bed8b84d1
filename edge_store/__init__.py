"""The edge store: SQLAlchemy models, repository and Alembic migrations."""
