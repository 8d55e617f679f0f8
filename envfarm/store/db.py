"""Opening the store: one engine per URL, migrations applied, one clear error when it cannot connect."""

from __future__ import annotations

import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError
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


def _sqlite_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.database and parsed.database != ":memory:":
        try:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot connect to the store at {url}: cannot create {Path(parsed.database).parent} ({exc.strerror})",
                "point ENVFARM_DB_URL at a writable path, or unset it for the default .envfarm/envfarm.db",
            ) from None
    engine = create_engine(url, connect_args={"timeout": 60, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        # Let SQLAlchemy emit BEGIN itself, so a claim can ask for BEGIN IMMEDIATE (the writer lock)
        # up front; WAL lets readers go on while one writer works.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # type: ignore[no-untyped-def]
        conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("sqlite_immediate") else "BEGIN")

    return engine


class Store:
    """Sessions over one database; every `session()` block is one transaction (commit or roll back whole)."""

    def __init__(self, url: str | None = None, migrate: bool = True) -> None:
        self.url = url or settings().db_url
        try:
            self.engine = _sqlite_engine(self.url) if self.url.startswith("sqlite") else create_engine(
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
            with self.engine.connect() as conn:
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
    def session(self, immediate: bool = False) -> Iterator[Session]:
        """One transaction. `immediate` takes SQLite's writer lock at BEGIN (needed for claim-then-update)."""
        bind = self.engine.connect()
        if immediate:
            bind = bind.execution_options(sqlite_immediate=True)
        session = Session(bind=bind, expire_on_commit=False)
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()
            bind.close()

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
