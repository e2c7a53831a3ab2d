"""How llama.cpp will split one llama_decode batch into ubatches (each a pass over the weights), mirrored from
llama_batch_allocr::split_equal(sequential=true) in the pinned llama.cpp, which a KV cache with one stream per
sequence uses: a ubatch takes sequences only in consecutive increasing id order, and the same number of tokens
from each. The scheduler orders its batch by sequence id so that the busy slots of a set share one ubatch."""

from __future__ import annotations

from typing import Sequence


def ubatches(seq_ids: Sequence[int], n_ubatch: int, streams: int) -> int:
    """The number of ubatches llama.cpp makes of a batch whose tokens belong to `seq_ids` (in batch order).
    With one KV stream (a unified cache or one sequence) it splits simply: ceil(tokens / n_ubatch)."""
    n = len(seq_ids)
    if streams <= 1:
        return -(-n // n_ubatch) if n else 0
    used = [False] * n
    per_seq: dict[int, list[int]] = {}
    for i, seq in enumerate(seq_ids):
        per_seq.setdefault(seq, []).append(i)
    cursor = {seq: 0 for seq in per_seq}
    count, left = 0, n
    while left:
        chosen: list[int] = []
        last = -1
        for i, seq in enumerate(seq_ids):
            if used[i] or seq in chosen:
                continue
            if chosen and seq != last + 1:
                continue
            chosen.append(seq)
            last = seq
            if len(chosen) > n_ubatch:
                break
        take = 0
        while all(cursor[s] + take < len(per_seq[s]) for s in chosen):
            take += 1
            if (take + 1) * len(chosen) > n_ubatch:
                break
        for s in chosen:
            for j in per_seq[s][cursor[s]:cursor[s] + take]:
                used[j] = True
            cursor[s] += take
        left -= take * len(chosen)
        count += 1
    return count


def runs(seqs: Sequence[int]) -> int:
    """How many runs of consecutive ids a sorted list of sequence ids has ({0,1,2}: 1; {0,2,3}: 2)."""
    return sum(1 for i, s in enumerate(seqs) if i == 0 or s != seqs[i - 1] + 1)
