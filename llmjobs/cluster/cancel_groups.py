"""The calls a cancel is split into, the same rule for qdel and scancel.

One qdel holding two or more subjobs of one array plus any other job crashes a stock OpenPBS 23.06 server (a
double free in its delete path; the fix is in no release), and the client then exits 0 without a word. So a
subjob is never listed: its whole array is deleted by the array's id, alone in its call; plain jobs next to
each other go together, in batches. Slurm keeps the same rule. The order is reversed (ids come in submission
order): downstream steps go before the steps they wait for, so none is ended as "dependency failed".
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

BATCH = 100  # plain job ids in one call


def cancel_groups(job_ids: Sequence[str], array_of: Callable[[str], str | None],
                  batch: int = BATCH) -> list[list[str]]:
    """``array_of(job_id)`` is the id that deletes the job's whole array, or None for a plain job."""
    groups: list[list[str]] = []
    seen: set[str] = set()
    batching = False  # the last group is a batch of plain jobs
    for job_id in reversed(list(job_ids)):
        array_id = array_of(job_id)
        if (array_id or job_id) in seen:
            continue
        seen.add(array_id or job_id)
        if array_id is not None:
            groups.append([array_id])
            batching = False
        elif batching and len(groups[-1]) < batch:
            groups[-1].append(job_id)
        else:
            groups.append([job_id])
            batching = True
    return groups
