"""Versioned schema migrations: ``NNNN_name.sql`` (statements for SQLite and PostgreSQL)
and optional ``NNNN_name.py`` Python steps; see :mod:`zkserver.store.schema`."""
