"""Continuous batching: the turns of a worker's concurrent episodes decoded together by one engine thread.

Each episode runs in its own thread (its sandbox commands block there) and asks for its next turn with
`submit`; the engine thread admits waiting turns into free slots of one `Decoder` between decoding steps and
hands each completion back the moment its row finishes, so a row that finished is taken by another episode's
next turn without waiting for the slowest row, and one episode's tool execution overlaps the decoding of the
others. Each turn starts from its episode's prefix-cache entry (`key`), so only its new tokens are prefilled.

The engine thread owns the engine while the batcher runs (its prefix cache and draft policy are not shared
with other callers). A failure in the engine thread fails every waiting and running turn with that error.
"""

from __future__ import annotations

import threading
from collections import deque
from concurrent.futures import Future
from typing import Hashable

import torch

from envfarm.errors import EnvfarmError
from envfarm.trainer.rollout.engine import Decoder, Request, RolloutEngine
from envfarm.trainer.rollout.result import Completion
from envfarm.trainer.rollout.sampling import SamplingParams


class ContinuousBatcher:
    def __init__(self, engine: RolloutEngine, sampling: SamplingParams, draft: str | None = None,
                 num_draft: int | None = None, slots: int = 8) -> None:
        if slots < 1:
            raise EnvfarmError(f"slots={slots}", "give the batcher at least one slot")
        self.engine = engine
        k = engine.check([[0]], draft, num_draft)
        self.decoder = Decoder(engine, sampling, draft, k, slots)
        self._pending: deque[Request] = deque()
        self._futures: dict[int, Future[Completion]] = {}
        self._cv = threading.Condition()
        self._closed = False
        self._error: BaseException | None = None
        # Evidence of continuous batching: admissions made while other rows were mid-completion, and the
        # occupied slots per step.
        self.admitted_while_decoding = 0
        self.admissions = 0
        self._occupied = 0
        # The engine thread uses the intra-op thread count of the thread that made the batcher (set explicitly:
        # a worker pins it, train.torch_threads, and the engine thread must not use more).
        self._torch_threads = torch.get_num_threads()
        self._thread = threading.Thread(target=self._run, name="rollout-batcher", daemon=True)
        self._thread.start()

    def submit(self, prompt: list[int], key: Hashable | None = None, max_new_tokens: int | None = None) -> Future[Completion]:
        """Queue one turn; the future resolves to its completion (Completion.stats: ttft_s, reused/prefilled tokens)."""
        self.engine.check([prompt], None, None)
        future: Future[Completion] = Future()
        request = Request(list(prompt), key, max_new_tokens, done=future.set_result)
        with self._cv:
            if self._closed:
                raise EnvfarmError("the batcher is closed", "submit turns before close()")
            if self._error is not None:
                raise EnvfarmError(f"the rollout engine failed: {self._error}", "see the worker log; restart the worker")
            self._futures[id(request)] = future
            future.add_done_callback(lambda _f, rid=id(request): self._futures.pop(rid, None))
            self._pending.append(request)
            self._cv.notify()
        return future

    def generate(self, prompt: list[int], key: Hashable | None = None, max_new_tokens: int | None = None) -> Completion:
        return self.submit(prompt, key, max_new_tokens).result()

    def _run(self) -> None:
        decoder = self.decoder
        torch.set_num_threads(self._torch_threads)
        try:
            while True:
                with self._cv:
                    while not self._pending and not decoder.busy and not self._closed:
                        self._cv.wait()
                    if self._closed and not self._pending and not decoder.busy:
                        return
                    free = decoder.free_slots()
                    batch = [self._pending.popleft() for _ in range(min(len(free), len(self._pending)))]
                with torch.no_grad():
                    if batch:
                        self.admissions += len(batch)
                        self.admitted_while_decoding += len(batch) * decoder.busy
                        decoder.admit(free[:len(batch)], batch)
                    if decoder.busy:
                        self._occupied += sum(r is not None for r in decoder.rows)
                        decoder.step()
        except BaseException as exc:  # noqa: BLE001 - handed to every caller waiting on a turn
            with self._cv:
                self._error = exc
                waiting = list(self._futures.values())
                self._pending.clear()
            for future in waiting:
                if not future.done():
                    future.set_exception(exc)

    def stats(self) -> dict:
        steps = max(1, self.decoder.steps)
        return {**self.decoder.stats(), "slots": self.decoder.b, "admissions": self.admissions,
                "admitted_while_decoding": self.admitted_while_decoding,
                "mean_occupied_slots": round(self._occupied / steps, 3)}

    def close(self) -> None:
        """Finish what was submitted, then stop the engine thread."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join()

    def __enter__(self) -> "ContinuousBatcher":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
