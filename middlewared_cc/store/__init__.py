"""The config database: SQLAlchemy 2 models, the async engine, migrations and sealed secrets."""
