"""The store tests' real databases (SQLite and PostgreSQL), for the sender tests here."""

from tests.store.conftest import store, store_kind, stores

__all__ = ["store", "store_kind", "stores"]
