"""Storage wrappers that force races deterministically: no sleeping and hoping."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from flux.storage import Storage


class Gate:
    """Wraps a storage: the ``nth`` call of ``method`` stops at its start until :meth:`open`.

    ``reached`` is set when that call arrives; every other call goes straight through.
    ``calls`` names every method called, in order (the way to check what one operation did).
    """

    def __init__(self, inner: Storage, method: str, nth: int = 1) -> None:
        self.inner = inner
        self.method = method
        self.nth = nth
        self.seen = 0
        self.reached = asyncio.Event()
        self._open = asyncio.Event()
        self.calls: list[str] = []
        self._arrivals: dict[int, asyncio.Event] = {}

    @property
    def storage(self) -> Storage:
        """This gate, typed as the Storage it stands for."""
        return cast(Storage, self)

    def arrival(self, n: int) -> asyncio.Event:
        """An event set when the ``n``-th call of ``method`` arrives."""
        event = self._arrivals.setdefault(n, asyncio.Event())
        if self.seen >= n:
            event.set()
        return event

    def open(self) -> None:
        """Let the stopped call go on."""
        self._open.set()

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if not callable(target):
            return target

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            if name == self.method:
                self.seen += 1
                self.arrival(self.seen).set()
                if self.seen == self.nth:
                    self.reached.set()
                    await self._open.wait()
            return await target(*args, **kwargs)

        return call
