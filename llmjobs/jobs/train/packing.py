"""Best-fit-decreasing packing and the batch plan: which documents every (step, rank, micro-batch) gets.

The plan is a pure function of the dataset, the seed and the step number, so resuming at step S computes
step S's batch directly instead of replaying the data loader up to it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

from llmjobs.jobs.train.data import IGNORE, Dataset


class _FirstFit:
    """Segment tree over remaining capacities 0..cap: the smallest capacity >= n that some bin has."""

    def __init__(self, cap: int) -> None:
        self.size = 1
        while self.size < cap + 1:
            self.size *= 2
        self.count = [0] * (2 * self.size)

    def add(self, c: int, delta: int) -> None:
        i = c + self.size
        while i:
            self.count[i] += delta
            i //= 2

    def smallest_at_least(self, n: int) -> int | None:
        def go(node: int, lo: int, hi: int) -> int | None:
            if hi < n or self.count[node] == 0:
                return None
            if lo == hi:
                return lo
            mid = (lo + hi) // 2
            left = go(2 * node, lo, mid)
            return left if left is not None else go(2 * node + 1, mid + 1, hi)

        return go(1, 0, self.size - 1)


def best_fit_decreasing(lengths: np.ndarray, capacity: int) -> list[list[int]]:
    """Bins of document indices, each bin's total length <= capacity; longest documents placed first, each
    into the bin it fills best."""
    order = np.argsort(-lengths, kind="stable")
    tree = _FirstFit(capacity)
    by_room: dict[int, list[int]] = {}
    bins: list[list[int]] = []
    for i in order.tolist():
        n = int(lengths[i])
        room = tree.smallest_at_least(max(n, 1))
        if room is None:
            b = len(bins)
            bins.append([i])
            left = capacity - n
        else:
            b = by_room[room].pop()
            tree.add(room, -1)
            bins[b].append(i)
            left = room - n
        if left > 0:
            by_room.setdefault(left, []).append(b)
            tree.add(left, 1)
    return bins


@dataclass
class Plan:
    bins: list[list[int]]  # document indices per row (one document each when not packing)
    rows_per_micro: int
    world: int
    accum: int
    seed: int
    loss_tokens_per_bin: np.ndarray
    tokens_per_bin: np.ndarray

    @property
    def rows_per_step(self) -> int:
        return self.rows_per_micro * self.world * self.accum

    @property
    def steps_per_epoch(self) -> int:
        return len(self.bins) // self.rows_per_step

    def _perm(self, epoch: int) -> np.ndarray:
        cached = getattr(self, "_cached", None)
        if cached is None or cached[0] != epoch:  # asked several times per step: shuffle once per epoch
            order = list(range(len(self.bins)))
            random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
            self._cached = cached = (epoch, np.asarray(order, dtype=np.int64))
        return cached[1]

    def rows(self, step: int) -> list[int]:
        """Every row (bin index) of optimizer step ``step``, all ranks, in (rank, micro, row) order."""
        epoch, s = divmod(step, self.steps_per_epoch)
        perm = self._perm(epoch)
        return perm[s * self.rows_per_step:(s + 1) * self.rows_per_step].tolist()

    def micro(self, step: int, rank: int, m: int) -> list[list[int]]:
        rows = self.rows(step)
        start = (rank * self.accum + m) * self.rows_per_micro
        return [self.bins[b] for b in rows[start:start + self.rows_per_micro]]

    def step_loss_tokens(self, step: int) -> int:
        return int(self.loss_tokens_per_bin[self.rows(step)].sum())

    def step_tokens(self, step: int) -> int:
        return int(self.tokens_per_bin[self.rows(step)].sum())


def make_plan(ds: Dataset, packing: bool, capacity: int, rows_per_micro: int, world: int, accum: int,
              seed: int) -> Plan:
    lengths = ds.lengths
    bins = best_fit_decreasing(lengths, capacity) if packing else [[i] for i in range(len(ds))]
    loss = np.add.reduceat((ds.labels != IGNORE).astype(np.int64), ds.offsets[:-1]) if len(ds) else np.zeros(0)
    loss_per_bin = np.array([loss[b].sum() for b in bins], dtype=np.int64)
    tokens_per_bin = np.array([lengths[b].sum() for b in bins], dtype=np.int64)
    plan = Plan(bins, rows_per_micro, world, accum, seed, loss_per_bin, tokens_per_bin)
    if plan.steps_per_epoch == 0:
        raise ValueError(f"{len(bins)} {'packed rows' if packing else 'samples'} are fewer than one optimizer "
                         f"step takes ({plan.rows_per_step} = per_device_train_batch_size {rows_per_micro} x "
                         f"{world} processes x gradient_accumulation_steps {accum}); lower them or add data")
    return plan


def collate_packed(ds: Dataset, bins: list[list[int]]) -> dict[str, np.ndarray]:
    """One padding-free row: documents back to back, position ids restarting at 0 for each, no mask."""
    docs = [d for b in bins for d in b]
    toks, labs, pos, lens = [], [], [], []
    for d in docs:
        t, lab = ds.doc(d)
        toks.append(t)
        labs.append(lab)
        pos.append(np.arange(len(t), dtype=np.int64))
        lens.append(len(t))
    cu = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    return {"input_ids": np.concatenate(toks)[None].astype(np.int64),
            "labels": np.concatenate(labs)[None].astype(np.int64),
            "position_ids": np.concatenate(pos)[None], "cu_seqlens": cu, "max_seqlen": np.int64(max(lens))}


def collate_padded(ds: Dataset, bins: list[list[int]], pad_id: int, pad_to: int | None = None) -> dict[str, np.ndarray]:
    """One document per row, right-padded to the longest (or ``pad_to``), with an attention mask."""
    docs = [d for b in bins for d in b]
    width = pad_to or max(ds.offsets[d + 1] - ds.offsets[d] for d in docs)
    ids = np.full((len(docs), width), pad_id, dtype=np.int64)
    labels = np.full((len(docs), width), IGNORE, dtype=np.int64)
    mask = np.zeros((len(docs), width), dtype=np.int64)
    for r, d in enumerate(docs):
        t, lab = ds.doc(d)
        ids[r, :len(t)] = t
        labels[r, :len(t)] = lab
        mask[r, :len(t)] = 1
    pos = np.broadcast_to(np.arange(width, dtype=np.int64), ids.shape).copy()
    return {"input_ids": ids, "labels": labels, "attention_mask": mask, "position_ids": pos}
