"""Storage: SQLAlchemy Core tables, engines and migrations."""
