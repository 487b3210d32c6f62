"""On PYTHONPATH of search.py's inline::sqlite-vec server when this Python's sqlite3 cannot load extensions (built
without --enable-loadable-sqlite-extensions, as pyenv builds it): Llama Stack's provider loads the sqlite-vec
extension into `sqlite3`, so pysqlite3-binary (the same DB-API over its own SQLite, which can) stands in for it
in that process alone."""

import sys

import pysqlite3
import pysqlite3.dbapi2

sys.modules["sqlite3"] = pysqlite3
sys.modules["sqlite3.dbapi2"] = pysqlite3.dbapi2
