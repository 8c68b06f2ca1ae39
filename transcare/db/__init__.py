"""Database: SQLAlchemy 2 metadata, engines and Alembic migrations (SQLite and PostgreSQL)."""
