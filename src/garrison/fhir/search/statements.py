"""A search's statements, compiled once per shape and run with each search's own values.

Searches repeat a few shapes: `Observation?patient=X&code=Y&_sort=-date` for other patients and
codes. Building such a statement with SQLAlchemy and having SQLAlchemy execute it cost more Python
time than the database spent running it (at 1,000 patients, about 1.5 ms of CPU on SQLite
against 0.5 ms for the statement). `conditions.Bindings` decides each filter's values before
anything is built and says what of the search decides its SQL (its shape); the first search of a
shape builds its statements with named placeholders and compiles them here; the others bind their
values to the compiled text. The statements still run through SQLAlchemy's `exec_driver_sql`, so
its events, logging and error wrapping apply as to any other statement.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Collection, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Connection, CursorResult
from sqlalchemy.engine.interfaces import Dialect
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.compiler import SQLCompiler


@dataclass(frozen=True, slots=True)
class CompiledStatement:
    """One statement compiled for a dialect. `constants` are the values its shape fixes (types,
    parameter codes, the LIMIT); `placeholders` are bound at each run. The search that compiled
    it keeps none of its own values here: they may be a patient's identifiers."""

    sql: str
    constants: Mapping[str, Any]
    placeholders: tuple[str, ...]
    order: tuple[str, ...] | None  # the parameter names in order, for a positional driver (SQLite)
    # The dialect's conversions of bound values by parameter name (SQLite's Float, say).
    processors: Mapping[str, Callable[[Any], Any]]

    @classmethod
    def of(
        cls, statement: ClauseElement, dialect: Dialect, placeholders: Collection[str]
    ) -> CompiledStatement:
        # Expanding IN lists of constants are written out now: their length is part of the shape.
        compiled = statement.compile(dialect=dialect, compile_kwargs={"render_postcompile": True})
        assert isinstance(compiled, SQLCompiler)
        order = tuple(compiled.positiontup or ()) if compiled.positional else None
        processors: dict[str, Callable[[Any], Any]] = {}
        for name, convert in compiled._bind_processors.items():
            if not callable(convert):  # a tuple's, which a search never binds
                raise TypeError(f"{name}: a tuple parameter cannot be bound")
            processors[name] = convert
        params = compiled.params
        constants = {name: value for name, value in params.items() if name not in placeholders}
        bound = tuple(name for name in params if name in placeholders)
        return cls(compiled.string, constants, bound, order, processors)

    def execute(self, connection: Connection, values: Mapping[str, Any]) -> CursorResult[Any]:
        """Run with `values` for the placeholders; every placeholder must have one."""
        params = dict(self.constants)
        for name in self.placeholders:
            if name not in values:
                raise KeyError(f"no value for {name} of a compiled search statement")
            params[name] = values[name]
        for name, convert in self.processors.items():
            if params.get(name) is not None:
                params[name] = convert(params[name])
        if self.order is not None:
            return connection.exec_driver_sql(self.sql, tuple(params[name] for name in self.order))
        return connection.exec_driver_sql(self.sql, params)


V = TypeVar("V")


class ShapeCache(Generic[V]):
    """The compiled statements of the most recently used shapes, shared by a process's threads."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._entries: OrderedDict[Hashable, V] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, shape: Hashable) -> V | None:
        with self._lock:
            entry = self._entries.get(shape)
            if entry is not None:
                self._entries.move_to_end(shape)
            return entry

    def put(self, shape: Hashable, entry: V) -> None:
        with self._lock:
            self._entries[shape] = entry
            self._entries.move_to_end(shape)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
