"""The store: SQLAlchemy models, sessions and migrations, one code path for SQLite and PostgreSQL.

`QueueItemRow` maps the `queue_items` table that migration 0001 created; nothing uses it since the work queue
was removed (the miner resumes from its candidates' status rows), and it stays until a migration drops it.
"""

from envfarm.store.db import Store, open_store
from envfarm.store.models import ImageRow, QueueItemRow, RewardRow, RunRow, SandboxEventRow, TaskRow

__all__ = ["Store", "open_store", "TaskRow", "ImageRow", "RunRow", "SandboxEventRow", "RewardRow", "QueueItemRow"]
