"""Which adapter set decodes next, with a stated bound: a set keeps the context until its streams finish or it has had
`budget` decode steps while another set waits; then the set that has waited longest goes. A busy set therefore
waits at most (busy sets - 1) x budget decode steps, and with k sets busy the context changes set at most once
per `budget` steps (llama.cpp re-reserves its compute graph after every change)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Hashable, Iterable


@dataclass
class Turns:
    """The switching policy's state; `pick()` is called once per decode step with the sets that have work."""

    budget: int = 32  # decode steps a set may keep the context while another set waits
    current: Hashable | None = None
    used: int = 0  # steps the current set has had since it got the context
    switches: int = 0
    _since: dict[Hashable, int] = field(default_factory=dict)  # set -> step at which it started waiting
    _step: int = 0

    def pick(self, busy: Iterable[Hashable]) -> Hashable | None:
        """The set to decode this step (None when no set has work); books the step and any switch."""
        sets = list(busy)
        self._step += 1
        for gone in [k for k in self._since if k not in sets]:
            del self._since[gone]
        if not sets:
            self.current, self.used = None, 0
            return None
        for key in sets:
            if key != self.current:
                self._since.setdefault(key, self._step)
        others = [k for k in sets if k != self.current]
        if self.current in sets and (not others or self.used < self.budget):
            self.used += 1
            return self.current
        nxt = min(others, key=lambda k: self._since[k])  # the longest wait goes first (FIFO among sets)
        if self.current in sets:
            self._since[self.current] = self._step  # the set we leave queues behind the others
        del self._since[nxt]
        if self.current is not None:
            self.switches += 1
        self.current, self.used = nxt, 1
        return nxt

    def waited(self, key: Hashable) -> int:
        """Decode steps `key` has been waiting for the context (0 for the current set)."""
        return self._step - self._since[key] if key in self._since else 0
