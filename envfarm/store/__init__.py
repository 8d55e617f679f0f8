"""The store: SQLAlchemy models, sessions, migrations, and a work queue safe for many processes."""

from envfarm.store.db import Store, open_store
from envfarm.store.models import ImageRow, QueueItemRow, RewardRow, RunRow, SandboxEventRow, TaskRow

__all__ = ["Store", "open_store", "TaskRow", "ImageRow", "RunRow", "SandboxEventRow", "RewardRow", "QueueItemRow"]
