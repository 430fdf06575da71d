"""Generate N samples per problem with a pool of engines, streaming results to disk so a run resumes.

Every sample is one JSON line ``{"id", "sample", "output", "tokens", "actor", "host"}`` in a JSONL file
written by one engine only (one file per engine and start), flushed as each problem's samples finish. A restart reads all
files, keeps the first record of each (problem id, sample index), and generates only the pairs still
missing. A half-written last line (a killed writer) is skipped.

Two ways to run the engines:
- ``pool="local"``: one engine in this process (one GPU, a tensor-parallel group, or a CPU).
- ``pool="ray"``: one Ray actor per GPU (per tensor-parallel group) on every node of the Ray cluster, or on
  CPU-only clusters ``cpu_actors`` actors of one core each; chunks of problems are handed out as actors
  free up (``ray.util.ActorPool``), so a slow engine never holds back the others.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import socket
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

log = logging.getLogger("llmjobs.eval.generate")

GEN_DIR = "generations"


@dataclass(frozen=True)
class Sampling:
    samples: int  # N per problem
    temperature: float = 0.6
    top_p: float = 0.95
    max_tokens: int = 2048
    seed: int = 0


@dataclass(frozen=True)
class EngineSpec:
    """What each pool member builds: ``make_engine(engine, model, adapter=..., tensor_parallel=..., **options)``."""

    engine: str = "auto"  # vllm | hf | auto
    model: str = ""
    adapter: str | None = None
    tensor_parallel: int = 1
    options: dict[str, Any] = field(default_factory=dict)

    def build(self):
        from llmjobs.jobs.engines import make_engine

        return make_engine(self.engine, self.model, adapter=self.adapter, tensor_parallel=self.tensor_parallel,
                           **self.options)


@dataclass(frozen=True)
class WorkItem:
    """One request: samples ``first .. first+count-1`` of one problem."""

    id: str
    prompt: str
    first: int
    count: int


# ---------------------------------------------------------------- files


def read_records(gen_dir: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """Every complete sample on disk, first record of a (problem id, sample) pair wins."""
    found: dict[tuple[str, int], dict[str, Any]] = {}
    for path in sorted(Path(gen_dir).glob("*.jsonl")):
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.endswith("\n"):
                    break  # the writer died mid-line
                try:
                    rec = json.loads(line)
                    key = (str(rec["id"]), int(rec["sample"]))
                except (ValueError, KeyError, TypeError):
                    continue
                found.setdefault(key, rec)
    return found


def collect(gen_dir: Path, ids: Sequence[str], samples: int) -> list[dict[str, Any]]:
    """Exactly ``samples`` records per problem, in problem then sample order; raises if any is missing."""
    found = read_records(gen_dir)
    out, missing = [], 0
    for pid in ids:
        for k in range(samples):
            rec = found.get((pid, k))
            if rec is None:
                missing += 1
            else:
                out.append(rec)
    if missing:
        raise RuntimeError(f"{missing} (problem, sample) pairs are still missing in {gen_dir}")
    return out


class SampleWriter:
    """Appends one engine's samples to its own file, one problem at a time."""

    def __init__(self, gen_dir: Path, actor: str) -> None:
        gen_dir.mkdir(parents=True, exist_ok=True)
        self.actor = actor
        self.host = socket.gethostname()
        # unique per engine and start: no two processes ever append to one file
        self.path = gen_dir / f"{actor}.{self.host}.{os.getpid()}.{uuid.uuid4().hex[:8]}.jsonl"
        self._f = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held open for the engine's life

    def write(self, records: Iterable[dict[str, Any]], sync: bool = True) -> None:
        # one write call per problem: its samples reach the file together
        self._f.write("".join(json.dumps(rec, ensure_ascii=False) + "\n" for rec in records))
        self._f.flush()
        if sync:
            self.sync()

    def sync(self) -> None:
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()


# ---------------------------------------------------------------- planning


def request_seed(seed: int, problem_id: str) -> int:
    """A per-problem seed. vLLM gives sample ``i`` of a request seeded ``s`` the seed ``s + i``, so a request
    for samples ``first..`` is seeded ``base + first``: sample k of a problem always draws with ``base + k``."""
    digest = hashlib.blake2b(f"{seed}\0{problem_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") % (2**31 - 2**16)


def plan(items: Sequence[tuple[str, str]], samples: int,
         done: Iterable[tuple[str, int]] = ()) -> list[WorkItem]:
    """The requests still needed: each problem's missing sample indexes, as contiguous runs."""
    have: dict[str, set[int]] = {}
    for pid, k in done:
        have.setdefault(pid, set()).add(k)
    work = []
    for pid, prompt in items:
        got = have.get(pid, set())
        k = 0
        while k < samples:
            if k in got:
                k += 1
                continue
            start = k
            while k < samples and k not in got:
                k += 1
            work.append(WorkItem(pid, prompt, start, k - start))
    return work


def chunked(work: list[WorkItem], size: int) -> list[list[WorkItem]]:
    return [work[i:i + size] for i in range(0, len(work), size)]


def default_chunk(work: int, engines: int) -> int:
    # about four chunks per engine balances the tail against per-call batching; a big batch feeds
    # vLLM's scheduler, and the chunk is also the unit that reaches disk
    return max(1, min(256, math.ceil(work / max(1, engines * 4))))


# ---------------------------------------------------------------- the work of one engine


PROGRESS_EVERY_S = 15.0


def _report(actor: str, done: int, total: int, tokens: int, seconds: float) -> None:
    rate = done / seconds if seconds > 0 else 0.0
    eta = time.strftime("%H:%M:%S", time.gmtime((total - done) / rate)) if rate else "?"
    log.info("%s: %d/%d samples (%.0f%%), %.0f tokens/s, eta %s", actor, done, total, 100 * done / max(1, total),
             tokens / seconds if seconds > 0 else 0.0, eta)


def run_chunk(engine, writer: SampleWriter, chunk: list[WorkItem], sampling: Sampling) -> dict[str, Any]:
    """Generate one chunk (one engine call per distinct sample count) and append its records as each problem
    finishes (engines with ``stream``) or when the call returns."""
    start = time.perf_counter()
    calls = samples = tokens = 0
    total = sum(item.count for item in chunk)
    last_report = time.monotonic()
    by_count: dict[int, list[WorkItem]] = {}
    for item in chunk:
        by_count.setdefault(item.count, []).append(item)
    for count, group in by_count.items():
        seeds = [request_seed(sampling.seed, it.id) + it.first for it in group]
        kwargs = {"n": count, "temperature": sampling.temperature, "top_p": sampling.top_p,
                  "max_tokens": sampling.max_tokens, "seed": seeds}
        prompts = [it.prompt for it in group]
        stream = getattr(engine, "stream", None)
        results = stream(prompts, **kwargs) if stream else enumerate(engine.generate(prompts, **kwargs))
        calls += 1
        seen = 0
        last_sync = time.monotonic()
        for index, gens in results:
            it = group[index]
            if len(gens) != count:
                raise RuntimeError(f"engine returned {len(gens)} samples for {it.id}, asked for {count}")
            records = [{"id": it.id, "sample": it.first + j, "output": g.text, "tokens": g.tokens,
                        "actor": writer.actor, "host": writer.host} for j, g in enumerate(gens)]
            # flushed at once (a killed process keeps it); fsynced about once a second (a crashed node)
            sync = time.monotonic() - last_sync > 1.0
            writer.write(records, sync=sync)
            if sync:
                last_sync = time.monotonic()
            seen += 1
            samples += len(records)
            tokens += sum(g.tokens for g in gens)
            if time.monotonic() - last_report > PROGRESS_EVERY_S:
                last_report = time.monotonic()
                _report(writer.actor, samples, total, tokens, time.perf_counter() - start)
        writer.sync()
        if seen != len(group):
            raise RuntimeError(f"engine returned {seen} results for {len(group)} prompts")
    return {"actor": writer.actor, "host": writer.host, "file": writer.path.name, "engine_calls": calls,
            "problems": len(chunk), "samples": samples, "tokens": tokens,
            "seconds": time.perf_counter() - start}


def _merge(stats: list[dict[str, Any]], wall: float, skipped: int) -> dict[str, Any]:
    per_actor: dict[str, dict[str, Any]] = {}
    for s in stats:
        a = per_actor.setdefault(s["actor"], {"host": s["host"], "node": s.get("node"), "chunks": 0, "engine_calls": 0,
                                              "samples": 0, "tokens": 0, "seconds": 0.0})
        a["chunks"] += 1
        for k in ("engine_calls", "samples", "tokens", "seconds"):
            a[k] += s[k]
    tokens = sum(s["tokens"] for s in stats)
    return {
        "generated_samples": sum(s["samples"] for s in stats),
        "generated_tokens": tokens,
        "engine_calls": sum(s["engine_calls"] for s in stats),
        "already_on_disk": skipped,
        "seconds": wall,
        "tokens_per_second": tokens / wall if wall > 0 and tokens else 0.0,
        "actors": per_actor,
    }


# ---------------------------------------------------------------- pools


def generate_local(work: list[WorkItem], spec: EngineSpec, sampling: Sampling, gen_dir: Path,
                   chunk: int | None = None, engine=None) -> list[dict[str, Any]]:
    """All work through one engine in this process (built from ``spec`` unless given)."""
    own = engine is None
    engine = engine or spec.build()
    writer = SampleWriter(gen_dir, "local")
    try:
        # an engine that streams writes each problem as it finishes: one call keeps its batch full
        size = chunk or (len(work) if hasattr(engine, "stream") else default_chunk(len(work), 1))
        return [run_chunk(engine, writer, c, sampling) for c in chunked(work, size)]
    finally:
        writer.close()
        if own:
            engine.close()


class EngineActor:
    """A Ray actor holding one engine; created through ``ray.remote`` in ``generate_ray``."""

    def __init__(self, spec: EngineSpec, gen_dir: str, name: str) -> None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s llmjobs %(levelname)s %(message)s")
        self.engine = spec.build()
        self.writer = SampleWriter(Path(gen_dir), name)

    def run(self, chunk: list[WorkItem], sampling: Sampling) -> dict[str, Any]:
        import ray

        return {**run_chunk(self.engine, self.writer, chunk, sampling),
                "node": ray.get_runtime_context().get_node_id()}

    def close(self) -> None:
        self.writer.close()
        self.engine.close()


def pool_shape(spec: EngineSpec, cpu_actors: int | None = None) -> list[dict[str, Any]]:
    """Ray resource options of each actor: one per GPU or tensor-parallel group on every node, or on a
    CPU-only cluster one single-core actor per core (or ``cpu_actors``)."""
    import ray

    tp = max(1, spec.tensor_parallel)
    per_node = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    gpu_actors = sum(int(r.get("GPU", 0)) // tp for r in per_node)
    if gpu_actors:
        return [{"num_gpus": tp, "num_cpus": 1} for _ in range(gpu_actors)]
    cores = sum(int(r.get("CPU", 0)) for r in per_node)
    count = cpu_actors or cores
    # one thread each, unpinned (vLLM would pin every engine to the same cores), and a KV cache of a fixed
    # size: the default share of host memory, taken by every engine on the node, would not fit
    env = {"OMP_NUM_THREADS": "1", "VLLM_CPU_OMP_THREADS_BIND": "nobind",
           "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")}
    return [{"num_cpus": 1, "runtime_env": {"env_vars": env}} for _ in range(max(1, count))]


def generate_ray(work: list[WorkItem], spec: EngineSpec, sampling: Sampling, gen_dir: Path,
                 chunk: int | None = None, cpu_actors: int | None = None) -> list[dict[str, Any]]:
    """All work through a pool of engine actors on the Ray cluster this process is connected to."""
    import ray
    from ray.util import ActorPool

    if spec.tensor_parallel > 1 and spec.engine in ("vllm", "auto"):
        # the actor holds its tensor-parallel GPUs itself: vLLM's workers are its own processes, not Ray
        # tasks (not exercised here: this needs GPUs)
        llm = {"distributed_executor_backend": "mp", **spec.options.get("llm_options", {})}
        spec = replace(spec, options={**spec.options, "llm_options": llm})
    shapes = pool_shape(spec, cpu_actors)
    shapes = shapes[:max(1, len(work))]  # no engine without work to do
    remote = ray.remote(EngineActor)
    actors = [remote.options(**shape).remote(spec, str(gen_dir), f"actor-{i:03d}")
              for i, shape in enumerate(shapes)]
    log.info("generating %d requests with %d engine actors", len(work), len(actors))
    try:
        size = chunk or default_chunk(len(work), len(actors))
        pool = ActorPool(actors)
        return list(pool.map_unordered(lambda a, c: a.run.remote(c, sampling), chunked(work, size)))
    finally:
        for actor in actors:
            try:
                ray.get(actor.close.remote(), timeout=60)
            except Exception as exc:  # a dead actor: its file is already flushed  # noqa: BLE001
                log.warning("engine actor did not close cleanly: %s", exc)
            ray.kill(actor)


def generate(items: Sequence[tuple[str, str]], out_dir: Path, sampling: Sampling, spec: EngineSpec,
             pool: str = "local", chunk: int | None = None, cpu_actors: int | None = None,
             engine=None) -> dict[str, Any]:
    """Generate what is missing of ``sampling.samples`` samples for each ``(id, prompt)``; return statistics.

    ``out_dir/generations`` holds the JSONL files; read them back with ``collect``.
    """
    ids = [pid for pid, _ in items]
    if len(set(ids)) != len(ids):
        raise ValueError("problem ids are not unique")
    gen_dir = Path(out_dir) / GEN_DIR
    gen_dir.mkdir(parents=True, exist_ok=True)
    done = [key for key in read_records(gen_dir) if key[1] < sampling.samples]
    work = plan(items, sampling.samples, done)
    skipped = len(items) * sampling.samples - sum(w.count for w in work)
    log.info("%d samples on disk, %d to generate", skipped, sum(w.count for w in work))
    start = time.perf_counter()
    if not work:
        stats = []
    elif pool == "ray":
        stats = generate_ray(work, spec, sampling, gen_dir, chunk, cpu_actors)
    elif pool == "local":
        stats = generate_local(work, spec, sampling, gen_dir, chunk, engine)
    else:
        raise ValueError(f"unknown pool {pool!r}: local or ray")
    result = _merge(stats, time.perf_counter() - start, skipped)
    result["sampling"] = asdict(sampling)
    return result
