"""Opening the store: one engine per URL, migrations applied, one clear error when it cannot connect.

Concurrent writers on SQLite: a transaction that reads and then writes starts as a reader and must upgrade
to the single writer lock mid-way; if another process wrote in between, SQLite refuses the upgrade at once
("database is locked", SQLITE_BUSY_SNAPSHOT) and the busy timeout never helps. So every session takes the
writer lock at BEGIN (`BEGIN IMMEDIATE`), where the busy timeout does wait, unless it says it only reads
(`readonly=True`: WAL lets readers run beside the writer). PostgreSQL needs none of this (row locks, MVCC).
A store error that still happens (a lock held past the timeout, a lost connection) is a `StoreError` with a fix.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from envfarm.config import settings
from envfarm.errors import StoreError

MIGRATIONS = Path(__file__).parent / "migrations"
_lock = threading.Lock()
_migrated: set[str] = set()


def redact(url: str) -> str:
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def _sqlite_engine(url: str, lock_timeout_s: float) -> Engine:
    parsed = make_url(url)
    if parsed.database and parsed.database != ":memory:":
        try:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot connect to the store at {url}: cannot create {Path(parsed.database).parent} ({exc.strerror})",
                "point ENVFARM_DB_URL at a writable path, or unset it for the default .envfarm/envfarm.db",
            ) from None
    engine = create_engine(url, connect_args={"timeout": lock_timeout_s, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        # Let SQLAlchemy emit BEGIN itself, so a writing session can take the writer lock up front
        # (BEGIN IMMEDIATE); WAL lets readers go on while one writer works.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(lock_timeout_s * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # type: ignore[no-untyped-def]
        conn.exec_driver_sql("BEGIN" if conn.get_execution_options().get("sqlite_readonly") else "BEGIN IMMEDIATE")

    return engine


class Store:
    """Sessions over one database; every `session()` block is one transaction (commit or roll back whole).
    `lock_timeout_s`: how long a SQLite writer waits for another process's write lock before failing."""

    def __init__(self, url: str | None = None, migrate: bool = True, lock_timeout_s: float = 60.0) -> None:
        self.url = url or settings().db_url
        self.lock_timeout_s = lock_timeout_s
        try:
            self.engine = _sqlite_engine(self.url, lock_timeout_s) if self.url.startswith("sqlite") else create_engine(
                self.url, pool_pre_ping=True, pool_size=5, max_overflow=10
            )
        except (ArgumentError, ImportError, SQLAlchemyError) as exc:
            raise StoreError(
                f"ENVFARM_DB_URL {redact(self.url)!r} is not a usable database URL ({exc})",
                "use sqlite:///path/envfarm.db or postgresql+psycopg://user:pass@host:5432/db",
            ) from None
        self.dialect = self.engine.dialect.name
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self.check()
        if migrate:
            self.migrate()

    def check(self) -> None:
        try:
            with self.engine.connect().execution_options(sqlite_readonly=True) as conn:
                conn.exec_driver_sql("SELECT 1")
        except (OperationalError, SQLAlchemyError, OSError) as exc:
            reason = str(getattr(exc, "orig", exc)).strip().splitlines()[0][:200]
            raise StoreError(
                f"cannot connect to the store at {redact(self.url)}: {reason}",
                "start the database or fix ENVFARM_DB_URL (unset it for the default SQLite file)",
            ) from None

    def migrate(self) -> None:
        with _lock:
            if self.url in _migrated:
                return
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS))
            with self.engine.begin() as conn:
                config.attributes["connection"] = conn
                command.upgrade(config, "head")
            _migrated.add(self.url)

    @contextmanager
    def session(self, readonly: bool = False) -> Iterator[Session]:
        """One transaction. On SQLite it holds the writer lock from BEGIN, so a read-then-write cannot be
        refused mid-way; `readonly=True` for blocks that only read, which then run beside writers instead
        of queueing behind them (a read-only block that writes anyway may be refused under load)."""
        bind = self.engine.connect()
        if readonly:
            bind = bind.execution_options(sqlite_readonly=True)
        session = Session(bind=bind, expire_on_commit=False)
        try:
            yield session
            session.commit()
        except DBAPIError as exc:
            session.rollback()
            if isinstance(exc, OperationalError) or exc.connection_invalidated:
                raise self._error(exc, readonly) from exc
            raise  # constraint violations and the like: the caller decides (e.g. a duplicate is not an error)
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()
            bind.close()

    def _error(self, exc: DBAPIError, readonly: bool) -> StoreError:
        reason = str(exc.orig).strip().splitlines()[0][:200] if exc.orig is not None else type(exc).__name__
        if self.dialect == "sqlite" and ("locked" in reason or "busy" in reason):
            if readonly:  # began as a reader: SQLite refuses the upgrade to writer at once, no waiting helps
                return StoreError(f"SQLite store {redact(self.url)}: a readonly=True session wrote while another process was writing ({reason})",
                                  "open that session without readonly=True, so it takes the write lock before it reads")
            return StoreError(f"SQLite store {redact(self.url)}: another process held the write lock for over {self.lock_timeout_s:g} s ({reason})",
                              "keep transactions short, run fewer writer processes, or use PostgreSQL for many writers (ENVFARM_DB_URL=postgresql+psycopg://...)")
        return StoreError(f"the store at {redact(self.url)} failed: {reason}",
                          "check that the database is running and reachable (ENVFARM_DB_URL), then retry")

    def dispose(self) -> None:
        self.engine.dispose()


_stores: dict[str, Store] = {}


def open_store(url: str | None = None) -> Store:
    """The process-wide store for a URL (engines are pools; one per URL per process)."""
    url = url or settings().db_url
    with _lock:
        store = _stores.get(url)
    if store is None:
        store = Store(url)
        with _lock:
            _stores.setdefault(url, store)
    return _stores[url]
