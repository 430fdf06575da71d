"""Grade answers with math-verify in a process pool with a hard per-item timeout, and a cache.

math-verify guards its own SymPy calls with ``signal.alarm``, which only works on the main thread of the main
interpreter (not in a Ray actor's or any worker thread), and cannot stop a long call inside C code. So the
work runs in a ``pebble.ProcessPool`` whose workers can be killed, and math-verify's own timeouts are switched
off inside them.

The fast path (rejection sampling grades millions of answers): a batch of the pairs still to decide is one pool
task, grouped by gold so each gold is parsed once per batch (and kept parsed in the worker for later batches).
Inside the worker every pair runs under its own ``timeout_s`` alarm (a pebble worker runs tasks on its main
thread, so ``setitimer`` works there); that cuts off SymPy work that runs in Python. A call stuck inside C
(a huge integer power) ignores the alarm: the batch then overruns its own hard limit, its worker is killed,
and the batch's pairs are graded again one task each, each with the hard ``timeout_s`` of the pool: a
runaway pair still ends as ``timeout`` and never blocks the others for longer than that.

Before the pool: the answer strings are cleaned, a pair repeated (within a call or since the grader started)
is answered from the cache, identical strings are equal and two plain integers (``42``, ``-7``) are compared
as integers, without math-verify (``same_text=False`` turns both shortcuts off).

``grade(gold, answer)`` asks math-verify whether ``answer`` equals ``gold`` (gold first: the comparison is not
symmetric, e.g. ``x = 3`` against the gold ``3``). ``equivalent(a, b)`` is the same question with ``a`` in
the gold's place and is what voting uses. Both strings go through ``answers.clean_answer`` and are wrapped in
``$...$`` so math-verify reads them as LaTeX.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import re
from collections.abc import Iterable, Sequence
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Literal, Self

from llmjobs.jobs.eval.answers import clean_answer

Status = Literal["ok", "same_text", "integers", "no_answer", "timeout", "error", "gold_unparsed"]

_INTEGER = re.compile(r"^[+-]?\d+$")


@dataclass(frozen=True)
class Verdict:
    correct: bool
    status: Status


# Answers of the shapes graders meet. math-verify's LaTeX parser (ANTLR) builds its prediction tables the first
# time it meets a construct, which makes a first interval or tuple cost ~100 ms; parsed once in the forkserver,
# every worker forked from it starts with the tables built.
_WARM = [
    "1", "-3", "0.5", "\\frac{1}{2}", "-\\dfrac{3}{4}", "2\\sqrt{3}", "\\sqrt[3]{2}", "3\\pi", "\\frac{\\pi}{4}", "e^{2}",
    "(1, 2)", "(-\\infty, 3]", "[2, 5)", "(1,2) \\cup (3, \\infty)", "\\left( 3, \\frac{\\pi}{2} \\right)",
    "\\left[\\frac{3}{5},\\frac{8}{3}\\right)", "\\{1, 2\\}", "1, 2, 3", "x = 3", "y = 2x - 1", "x^2 + 2x + 1",
    "(a+5)(b+2)", "3 + 4i", "\\log_2 8", "\\ln 3", "\\sin x", "\\cos \\frac{\\pi}{3}", "30^\\circ", "50\\%",
    "\\text{(A)}", "\\text{Monday}", "10_2", "\\begin{pmatrix} 1 \\\\ 2 \\end{pmatrix}",
    "\\begin{pmatrix} 1 & 2 \\\\ 3 & 4 \\end{pmatrix}", "a \\le b", "x > 2", "2^{10}", "n!", "\\binom{5}{2}", "|x|",
    "\\infty", "\\mathbf{v}", "f(x) = x^2", "5 \\text{ cm}", "1 \\pm \\sqrt{2}", "11 \\sqrt{5} + 11",
]
_warmed = False


def warm_up() -> None:
    """Parse and verify the shapes above once in this process (its forks inherit the parser's tables)."""
    global _warmed
    if _warmed:
        return
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    from math_verify import parse, verify

    two = parse("$2$", parsing_timeout=None)
    for text in _WARM:
        try:
            verify(parse(f"${text}$", parsing_timeout=None), two, timeout_seconds=None)
        except Exception:  # noqa: BLE001, S110  a warm-up string math-verify rejects is only a cold table
            pass
    _warmed = True


def _worker_init() -> None:
    # The pool enforces the timeout; silence math-verify's warning that its own one is off.
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    warm_up()  # done already in the forkserver; under plain fork or spawn, here


def verify_pair(gold: str, answer: str) -> tuple[bool, str]:
    """Runs in a worker. ``gold`` and ``answer`` are cleaned strings."""
    from math_verify import parse, verify

    g = parse(f"${gold}$", parsing_timeout=None)
    if not g:
        return False, "gold_unparsed"
    a = parse(f"${answer}$", parsing_timeout=None)
    return bool(verify(g, a, timeout_seconds=None)), "ok"


class _ItemTimeout(BaseException):
    """Raised by the worker's alarm; a BaseException so math-verify's ``except Exception`` does not eat it."""


# Per worker: every string parsed so far (golds and answers). The first parse of a string costs 1-100 ms in
# math-verify's ANTLR parser, a repeat nothing; voting compares the same answers again.
_PARSED: dict[str, list] = {}


def _parsed(text: str) -> list:
    found = _PARSED.get(text)
    if found is None:
        from math_verify import parse

        found = parse(f"${text}$", parsing_timeout=None)
        if len(_PARSED) > 100_000:
            _PARSED.clear()
        _PARSED[text] = found
    return found


def _alarm(signum, frame):
    raise _ItemTimeout


def verify_batch(groups: list[tuple[str, list[str]]], item_timeout: float) -> list[list[tuple[bool, str]]]:
    """Runs in a worker: for each ``(gold, answers)`` the gold is parsed once, then each answer is parsed and
    verified; every parse and verify runs under an ``item_timeout`` alarm (status ``timeout`` when it fires)."""
    import signal

    from math_verify import verify

    previous = signal.signal(signal.SIGALRM, _alarm)
    out: list[list[tuple[bool, str]]] = []

    def timed(fn, *args, **kwargs):
        signal.setitimer(signal.ITIMER_REAL, item_timeout)
        try:
            return fn(*args, **kwargs)
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)

    try:
        for gold, answers in groups:
            verdicts: list[tuple[bool, str]] = []
            out.append(verdicts)
            try:
                g = timed(_parsed, gold)
            except _ItemTimeout:
                verdicts.extend((False, "timeout") for _ in answers)
                continue
            except Exception:  # noqa: BLE001  a crash in the parser: every pair of this gold is an error
                verdicts.extend((False, "error") for _ in answers)
                continue
            if not g:
                verdicts.extend((False, "gold_unparsed") for _ in answers)
                continue
            for answer in answers:
                try:
                    # one deadline for the answer's parse and its comparison
                    same = timed(lambda g=g, answer=answer: verify(g, _parsed(answer), timeout_seconds=None))
                    verdicts.append((bool(same), "ok"))
                except _ItemTimeout:
                    verdicts.append((False, "timeout"))
                except Exception:  # noqa: BLE001
                    verdicts.append((False, "error"))
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return out


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
        ctx.set_forkserver_preload(["math_verify", "llmjobs.jobs.eval.grading_warm"])
    return ctx


@dataclass
class GradingStats:
    graded: int = 0  # pairs asked for
    cache_hits: int = 0
    same_text: int = 0  # decided without math-verify: identical after cleaning
    integers: int = 0  # decided without math-verify: both plain integers
    verified: int = 0  # pairs sent to the pool
    timeouts: int = 0
    errors: int = 0
    batches: int = 0  # pool tasks of several pairs that finished
    batch_retries: int = 0  # batches that overran their hard limit and were graded again pair by pair
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
            "integers": self.integers,
            "verified": self.verified,
            "timeouts": self.timeouts,
            "errors": self.errors,
            "batches": self.batches,
            "batch_retries": self.batch_retries,
            "examples": {k: [list(p) for p in v] for k, v in self.examples.items()},
        }


class Grader:
    """``with Grader(workers=4, timeout_s=5) as g: g.grade_many([(gold, answer), ...])``."""

    def __init__(
        self, workers: int | None = None, timeout_s: float = 5.0, cache: bool = True, same_text: bool = True,
        batch: int = 64, batch_timeout_s: float | None = None,
    ):
        """``same_text=False`` sends even identical strings to math-verify (tests of the parser use it);
        ``batch``: most pairs per pool task (1: every pair its own task, the slow path)."""
        self.batch = max(1, batch)
        self.batch_timeout_s = batch_timeout_s  # a batch's hard limit; default 2 * timeout_s + 50 ms a pair
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
            elif self.same_text and _INTEGER.match(key[0]) and _INTEGER.match(key[1]):
                # two plain integers: equal exactly when their values are, as math-verify would find
                self.stats.integers += 1
                out[pos] = Verdict(int(key[0]) == int(key[1]), "integers")
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
        """Verdicts for distinct cleaned pairs: batches of pairs grouped by gold, one pool task each; a batch
        that overruns its hard limit (or whose worker dies) is graded again one pair per task."""
        pool = self._ensure_pool()
        self.stats.verified += len(todo)
        results: list[tuple[bool, str] | None] = [None] * len(todo)
        by_gold: dict[str, list[int]] = {}
        for i, (gold, _) in enumerate(todo):
            by_gold.setdefault(gold, []).append(i)
        # about four batches per worker keeps every worker busy to the end; small enough that a killed batch
        # costs little, big enough that the per-task cost of the pool disappears (never under 4 pairs)
        size = min(self.batch, max(4, -(-len(todo) // (self.workers * 4))))
        batches: list[list[int]] = [[]]
        for positions in by_gold.values():
            for i in positions:
                if len(batches[-1]) >= size:
                    batches.append([])
                batches[-1].append(i)
        batches = [b for b in batches if b]
        singles: list[int] = []
        futures = []
        for b in batches:
            if len(b) == 1:
                singles.append(b[0])
                continue
            groups: dict[str, list[int]] = {}
            for i in b:
                groups.setdefault(todo[i][0], []).append(i)
            payload = [(gold, [todo[i][1] for i in idx]) for gold, idx in groups.items()]
            order = [i for idx in groups.values() for i in idx]
            hard = self.batch_timeout_s or 2 * self.timeout_s + 0.05 * len(b)
            futures.append((order, pool.schedule(verify_batch, args=(payload, self.timeout_s), timeout=hard)))
        single_futures = [(i, pool.schedule(verify_pair, args=todo[i], timeout=self.timeout_s)) for i in singles]
        retry: list[int] = []
        for order, fut in futures:
            try:
                flat = [v for group in fut.result() for v in group]
            except Exception:  # noqa: BLE001  overran (stuck in C) or the worker died: one task per pair
                self.stats.batch_retries += 1
                retry.extend(order)
                continue
            self.stats.batches += 1
            for i, v in zip(order, flat):
                results[i] = v
        single_futures += [(i, pool.schedule(verify_pair, args=todo[i], timeout=self.timeout_s)) for i in retry]
        for i, fut in single_futures:
            try:
                results[i] = fut.result()
            except FutureTimeout:
                results[i] = (False, "timeout")
            except Exception:  # noqa: BLE001  a crash in SymPy or a killed worker: wrong, and counted
                results[i] = (False, "error")
        out: list[Verdict] = []
        for key, (correct, status) in zip(todo, results):  # type: ignore[misc]
            verdict = Verdict(correct, status)  # type: ignore[arg-type]
            if status == "timeout":
                self.stats.timeouts += 1
            elif status == "error":
                self.stats.errors += 1
            if status != "ok":
                self.stats.note(status, key)
            if status == "gold_unparsed":
                # Last resort for golds math-verify cannot read: exact text (cleaning already happened).
                verdict = Verdict(key[0] == key[1], "gold_unparsed")
            out.append(verdict)
        return out
