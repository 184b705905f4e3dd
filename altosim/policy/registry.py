"""One generic name -> factory registry; config files pick implementations by name."""

from __future__ import annotations

from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps a policy name to a factory. Unknown names raise one clear ValueError."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._factories: dict[str, Callable[..., T]] = {}

    def register(self, name: str) -> Callable[[Callable[..., T]], Callable[..., T]]:
        def deco(factory: Callable[..., T]) -> Callable[..., T]:
            if name in self._factories:
                raise ValueError(f"{self.kind} policy {name!r} registered twice")
            self._factories[name] = factory
            return factory

        return deco

    def names(self) -> list[str]:
        return sorted(self._factories)

    def build(self, name: str, **params: Any) -> T:
        if name not in self._factories:
            raise ValueError(f"unknown {self.kind} policy {name!r}; known: {', '.join(self.names())}")
        try:
            return self._factories[name](**params)
        except TypeError as e:  # unexpected/missing keyword
            raise ValueError(f"bad parameters for {self.kind} policy {name!r}: {e}") from None


EARLY_EXIT: Registry[Any] = Registry("early_exit")
INTER_TASK: Registry[Any] = Registry("inter_task")
