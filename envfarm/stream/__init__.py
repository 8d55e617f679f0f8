"""The reward stream: rollout workers publish `RewardEvent`s as verifiers finish, the trainer consumes them
in batches of complete groups. At-least-once delivery made exactly-once in effect by deduplication on
`rollout_id`, a durable ledger in the store (the `rewards` table), a staleness bound and back-pressure."""

from envfarm.stream.events import RewardEvent
from envfarm.stream.ledger import RewardLedger
from envfarm.stream.stream import ConsumedBatch, RewardStream, StreamFull

__all__ = ["RewardEvent", "RewardLedger", "RewardStream", "ConsumedBatch", "StreamFull"]
