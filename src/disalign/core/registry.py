"""Factories by name: the plugin kinds that rooms above the core add to (judges, BEB settings)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from disalign.errors import UserError

Factory = TypeVar("Factory", bound=Callable)


class Registry(Generic[Factory]):
    def __init__(self, kind: str):
        self.kind = kind
        self._factories: dict[str, Factory] = {}

    def register(self, name: str) -> Callable[[Factory], Factory]:
        """A decorator that adds a factory under `name`; a name registered twice is a bug."""

        def add(factory: Factory) -> Factory:
            if name in self._factories:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._factories[name] = factory
            return factory

        return add

    def names(self) -> list[str]:
        return sorted(self._factories)

    def get(self, name: str) -> Factory:
        """The factory of `name`; an unknown name is the user's mistake, one line naming the known ones."""
        if name not in self._factories:
            known = ", ".join(self.names()) or "none registered"
            raise UserError(f"unknown {self.kind} '{name}'; known: {known}")
        return self._factories[name]
