"""Grade answers with math-verify in a process pool with a hard per-item timeout, and a cache.

math-verify guards its own SymPy calls with ``signal.alarm``, which only works on the main thread of the main
interpreter (not in a Ray actor's or any worker thread), and cannot stop a long call inside C code. So each
(gold, answer) pair runs as one task of a ``pebble.ProcessPool``: a task that runs past ``timeout_s`` has its
worker process killed and replaced, and the pair is graded wrong with status ``timeout``. math-verify's own
timeouts are switched off inside the workers (the pool's is the one that holds).

``grade(gold, answer)`` asks math-verify whether ``answer`` equals ``gold`` (gold first: the comparison is not
symmetric, e.g. ``x = 3`` against the gold ``3``). ``equivalent(a, b)`` is the same question with ``a`` in
the gold's place and is what voting uses. Both strings go through ``answers.clean_answer`` and are wrapped in
``$...$`` so math-verify reads them as LaTeX.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Literal, Self

from llmjobs.jobs.eval.answers import clean_answer

Status = Literal["ok", "same_text", "no_answer", "timeout", "error", "gold_unparsed"]


@dataclass(frozen=True)
class Verdict:
    correct: bool
    status: Status


def _worker_init() -> None:
    # The pool enforces the timeout; silence math-verify's warning that its own one is off.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    import math_verify  # noqa: F401  (already loaded by the forkserver; a no-op then)


def verify_pair(gold: str, answer: str) -> tuple[bool, str]:
    """Runs in a worker. ``gold`` and ``answer`` are cleaned strings."""
    from math_verify import parse, verify

    g = parse(f"${gold}$", parsing_timeout=None)
    if not g:
        return False, "gold_unparsed"
    a = parse(f"${answer}$", parsing_timeout=None)
    return bool(verify(g, a, timeout_seconds=None)), "ok"


def _context() -> multiprocessing.context.BaseContext:
    """forkserver: workers fork from a clean process that has math-verify (and SymPy) loaded, so replacing a
    killed worker is quick, and the parent's threads (the pool's own, a Ray driver's) are never forked. Like
    any spawn-style start it re-imports the main script in each worker, so scripts need the
    ``if __name__ == "__main__":`` guard. A main script that cannot be re-imported (read from stdin) gets
    plain fork instead. ``LLMJOBS_GRADING_START`` (fork, forkserver, spawn) overrides the choice."""
    import sys

    method = os.environ.get("LLMJOBS_GRADING_START")
    if method is None:
        main_file = getattr(sys.modules.get("__main__"), "__file__", None)
        method = "fork" if main_file is not None and not os.path.exists(main_file) else "forkserver"
    ctx = multiprocessing.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload(["math_verify", "llmjobs.jobs.eval.grading"])
    return ctx


@dataclass
class GradingStats:
    graded: int = 0  # pairs asked for
    cache_hits: int = 0
    same_text: int = 0  # decided without math-verify: identical after cleaning
    verified: int = 0  # pairs sent to the pool
    timeouts: int = 0
    errors: int = 0
    examples: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # a few per failure status

    def note(self, status: str, pair: tuple[str, str]) -> None:
        bucket = self.examples.setdefault(status, [])
        if len(bucket) < 5:
            bucket.append(pair)

    def as_dict(self) -> dict:
        return {
            "pairs": self.graded,
            "cache_hits": self.cache_hits,
            "same_text": self.same_text,
            "verified": self.verified,
            "timeouts": self.timeouts,
            "errors": self.errors,
            "examples": {k: [list(p) for p in v] for k, v in self.examples.items()},
        }


class Grader:
    """``with Grader(workers=4, timeout_s=5) as g: g.grade_many([(gold, answer), ...])``."""

    def __init__(
        self, workers: int | None = None, timeout_s: float = 5.0, cache: bool = True, same_text: bool = True
    ):
        """``same_text=False`` sends even identical strings to math-verify (tests of the parser use it)."""
        self.workers = workers or max(1, min(len(os.sched_getaffinity(0)), 16))  # the CPUs this job may use
        self.same_text = same_text
        self.timeout_s = timeout_s
        self.cache: dict[tuple[str, str], Verdict] | None = {} if cache else None
        self.stats = GradingStats()
        self._pool = None

    # -- pool ---------------------------------------------------------------------------------------
    def _ensure_pool(self):
        if self._pool is None:
            from pebble import ProcessPool

            self._pool = ProcessPool(max_workers=self.workers, initializer=_worker_init, context=_context())
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.stop()
            self._pool.join()
            self._pool = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- grading ------------------------------------------------------------------------------------
    def grade(self, gold: str, answer: str | None) -> Verdict:
        return self.grade_many([(gold, answer)])[0]

    def equivalent(self, a: str, b: str) -> bool:
        return self.grade(a, b).correct

    def equivalent_many(self, pairs: Sequence[tuple[str, str]]) -> list[bool]:
        return [v.correct for v in self.grade_many(pairs)]

    def grade_many(self, pairs: Iterable[tuple[str, str | None]]) -> list[Verdict]:
        """One verdict per pair, in order. Pairs not decided by the cache run in parallel; with the cache on,
        a pair repeated within the batch runs once. With ``cache=False`` every pair goes to math-verify."""
        out: list[Verdict | None] = []
        todo: list[tuple[tuple[str, str], list[int]]] = []  # (cleaned pair, positions waiting for it)
        pending: dict[tuple[str, str], int] = {}  # pair -> index in todo (cache on only)
        for gold, answer in pairs:
            self.stats.graded += 1
            pos = len(out)
            out.append(None)
            if answer is None:
                out[pos] = Verdict(False, "no_answer")
                continue
            key = (clean_answer(gold), clean_answer(answer))
            if self.cache is not None and key in self.cache:
                self.stats.cache_hits += 1
                out[pos] = self.cache[key]
            elif self.cache is not None and key in pending:
                self.stats.cache_hits += 1
                todo[pending[key]][1].append(pos)
            elif self.same_text and key[0] and key[0] == key[1]:
                self.stats.same_text += 1
                out[pos] = Verdict(True, "same_text")
            elif not key[1]:
                out[pos] = Verdict(False, "no_answer")
            else:
                if self.cache is not None:
                    pending[key] = len(todo)
                todo.append((key, [pos]))
        if todo:
            for (key, positions), verdict in zip(todo, self._run([k for k, _ in todo])):
                for p in positions:
                    out[p] = verdict
                if self.cache is not None:
                    self.cache[key] = verdict
        return out  # type: ignore[return-value]

    def _run(self, todo: list[tuple[str, str]]) -> list[Verdict]:
        pool = self._ensure_pool()
        self.stats.verified += len(todo)
        futures = [pool.schedule(verify_pair, args=key, timeout=self.timeout_s) for key in todo]
        out: list[Verdict] = []
        for key, fut in zip(todo, futures):
            try:
                correct, status = fut.result()
                verdict = Verdict(correct, status)  # type: ignore[arg-type]
            except FutureTimeout:
                verdict = Verdict(False, "timeout")
                self.stats.timeouts += 1
            except Exception:  # noqa: BLE001  a crash in SymPy or a killed worker: wrong, and counted
                verdict = Verdict(False, "error")
                self.stats.errors += 1
            if verdict.status != "ok":
                self.stats.note(verdict.status, key)
            if verdict.status == "gold_unparsed":
                # Last resort for golds math-verify cannot read: exact text (cleaning already happened).
                verdict = Verdict(key[0] == key[1], "gold_unparsed")
            out.append(verdict)
        return out
