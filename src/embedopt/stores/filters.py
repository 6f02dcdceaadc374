"""One metadata-filter language for every store, applied during the search (never after it).

A filter is a dict, the Mongo-like form LangChain's vector stores take::

    {"lang": "en"}                                  exact match (a list value: any of its items)
    {"year": {"$gte": 2020, "$lt": 2024}}           operators on one field (all must hold)
    {"$or": [{"lang": "en"}, {"tags": {"$in": ["a", "b"]}}]}
    {"$and": [...]}, {"$not": {...}}                several top-level fields are an implicit $and

Operators: ``$eq $ne $in $nin $gt $gte $lt $lte $exists``. A field whose payload value is a list matches
``$eq``/``$in`` when any of its items does (Qdrant's rule, kept for every store); ``$ne``/``$nin`` match when
no item does, and also when the field is missing; the range operators take numbers and match numbers only.
Keys may be dotted paths into nested objects (``"meta.lang"``).

:func:`parse_filter` checks a filter once and returns its tree; :func:`compile_filter` turns it into a predicate
over payloads (the embedded store's row mask), :func:`to_qdrant` into Qdrant's filter models (qdrant-client's
or qdrant-edge's, whose shapes agree). The LlamaIndex adapter translates ``MetadataFilters`` into this form.
"""

from __future__ import annotations

import json
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import ConfigError

__all__ = ["And", "Cond", "Filter", "FilterNode", "Not", "Or", "compile_filter", "parse_filter", "to_qdrant"]

#: What a store's ``where=`` takes: the dict form above, or a tree from :func:`parse_filter`.
Filter = Mapping[str, Any]

Op = Literal["eq", "ne", "in", "nin", "gt", "gte", "lt", "lte", "exists"]
_OPS: tuple[str, ...] = ("eq", "ne", "in", "nin", "gt", "gte", "lt", "lte", "exists")
_RANGE = ("gt", "gte", "lt", "lte")
Scalar = str | int | float | bool


@dataclass(frozen=True)
class Cond:
    key: str
    op: Op
    value: Any


@dataclass(frozen=True)
class And:
    items: tuple[FilterNode, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[FilterNode, ...]


@dataclass(frozen=True)
class Not:
    item: FilterNode


FilterNode = Cond | And | Or | Not


def _scalar(key: str, op: str, value: Any) -> Scalar:
    if isinstance(value, (str, bool)) or (isinstance(value, numbers.Real) and not isinstance(value, bool)):
        return value  # type: ignore[return-value]
    raise ConfigError(f"filter {key!r} ${op}: values must be str, int, float or bool, got {type(value).__name__}")


def _cond(key: str, op: str, value: Any) -> Cond:
    if op not in _OPS:
        raise ConfigError(f"unknown filter operator ${op} on {key!r}; use one of "
                          f"{', '.join('$' + o for o in _OPS)}, $and, $or, $not")
    if op in ("in", "nin"):
        if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, set, frozenset)):
            raise ConfigError(f"filter {key!r} ${op} takes a list of values, got {value!r}")
        return Cond(key, op, tuple(_scalar(key, op, v) for v in value))  # type: ignore[arg-type]
    if op in _RANGE:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise ConfigError(f"filter {key!r} ${op} compares numbers, got {value!r}")
        return Cond(key, op, float(value))  # type: ignore[arg-type]
    if op == "exists":
        if not isinstance(value, bool):
            raise ConfigError(f"filter {key!r} $exists takes true or false, got {value!r}")
        return Cond(key, "exists", value)
    return Cond(key, op, _scalar(key, op, value))  # type: ignore[arg-type]


def parse_filter(where: Filter | FilterNode | None) -> FilterNode | None:
    """The tree of a filter, checked (unknown operators and bad values refused); ``None`` for no filter."""
    if where is None or isinstance(where, (Cond, And, Or, Not)):
        return where
    if not isinstance(where, Mapping):
        raise ConfigError(f"a filter is a dict such as {{'lang': 'en', 'year': {{'$gte': 2020}}}}, "
                          f"got {type(where).__name__}")
    items: list[FilterNode] = []
    for key, value in where.items():
        if not isinstance(key, str) or not key:
            raise ConfigError(f"filter keys are non-empty strings, got {key!r}")
        if key in ("$and", "$or"):
            if isinstance(value, Mapping) or not isinstance(value, Sequence) or not value:
                raise ConfigError(f"{key} takes a non-empty list of filters, got {value!r}")
            parts = tuple(p for p in (parse_filter(v) for v in value) if p is not None)
            items.append(And(parts) if key == "$and" else Or(parts))
        elif key == "$not":
            inner = parse_filter(value)
            if inner is None:
                raise ConfigError("$not takes a filter, got None")
            items.append(Not(inner))
        elif key.startswith("$"):
            raise ConfigError(f"unknown filter operator {key} at the top level; use $and, $or, $not or a field name")
        elif isinstance(value, Mapping):
            if not value:
                raise ConfigError(f"filter {key!r} has an empty operator dict")
            for op, operand in value.items():
                if not isinstance(op, str) or not op.startswith("$"):
                    raise ConfigError(f"filter {key!r}: {op!r} is not an operator; nested objects are matched "
                                      f"with dotted keys ({key}.{op})")
                items.append(_cond(key, op[1:], operand))
        elif isinstance(value, (list, tuple, set, frozenset)):
            items.append(_cond(key, "in", list(value)))
        else:
            items.append(_cond(key, "eq", value))
    if not items:
        return None
    return items[0] if len(items) == 1 else And(tuple(items))


def canonical(node: FilterNode | None) -> str:
    """A stable text of a filter tree (the embedded store caches its row masks under it)."""
    def enc(n: FilterNode) -> Any:
        if isinstance(n, Cond):
            return [n.key, n.op, list(n.value) if isinstance(n.value, tuple) else n.value]
        if isinstance(n, Not):
            return ["not", enc(n.item)]
        return ["and" if isinstance(n, And) else "or", [enc(i) for i in n.items]]
    return json.dumps(None if node is None else enc(node), sort_keys=True)


# ----------------------------------------------------------------------------------------------- evaluation
_MISSING = object()


def _lookup(payload: Mapping[str, Any], key: str) -> Any:
    if key in payload:
        return payload[key]
    value: Any = payload
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return _MISSING
        value = value[part]
    return value


def _values(found: Any) -> list[Any]:
    if found is _MISSING or found is None:
        return []
    return list(found) if isinstance(found, list) else [found]


def _same(a: Any, b: Any) -> bool:
    """Equality without Python's True == 1: a bool matches only a bool (as in Qdrant)."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def _number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


_CMP: dict[str, Callable[[float, float], bool]] = {
    "gt": lambda a, b: a > b, "gte": lambda a, b: a >= b, "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b}


def _cond_predicate(c: Cond) -> Callable[[Mapping[str, Any]], bool]:
    key, op, target = c.key, c.op, c.value
    if op == "exists":
        return lambda p: bool(_values(_lookup(p, key))) is target
    if op in _CMP:
        cmp = _CMP[op]
        return lambda p: any(_number(v) and cmp(v, target) for v in _values(_lookup(p, key)))
    targets = target if isinstance(target, tuple) else (target,)

    def hit(p: Mapping[str, Any]) -> bool:
        return any(_same(v, t) for v in _values(_lookup(p, key)) for t in targets)

    if op in ("eq", "in"):
        return hit
    return lambda p: not hit(p)


def compile_filter(node: FilterNode) -> Callable[[Mapping[str, Any]], bool]:
    """A predicate over payloads that answers as the filter does in Qdrant."""
    if isinstance(node, Cond):
        return _cond_predicate(node)
    if isinstance(node, Not):
        inner = compile_filter(node.item)
        return lambda p: not inner(p)
    preds = [compile_filter(i) for i in node.items]
    if isinstance(node, And):
        return lambda p: all(f(p) for f in preds)
    return lambda p: any(f(p) for f in preds)


# ---------------------------------------------------------------------------------------------------- Qdrant
def to_qdrant(node: FilterNode, m: Any, *, edge: bool = False, bool_key: Callable[[str], str] | None = None) -> Any:
    """The filter as Qdrant models: ``m`` is ``qdrant_client.models`` (``edge=False``) or the ``qdrant_edge``
    module (``edge=True``); both have Filter, FieldCondition, MatchValue/MatchAny/MatchExcept, IsEmptyCondition.
    ``bool_key`` redirects a match on a bool to a string mirror of the field (``"true"``/``"false"``), for an
    engine that cannot match bools itself (qdrant-edge-py 0.9 reads True as the integer 1)."""
    def match(kind: str, value: Any) -> Any:
        if kind == "value":
            return m.MatchValue(value=value)
        if kind == "any":
            return m.MatchAny(any=list(value))
        return m.MatchExcept(except_=list(value)) if edge else m.MatchExcept(**{"except": list(value)})

    def rng(**bounds: float) -> Any:
        return (m.RangeFloat if edge else m.Range)(**bounds)

    def field(key: str, **kw: Any) -> Any:
        return m.FieldCondition(key=key, **kw)

    def eq(key: str, value: Any) -> Any:
        if isinstance(value, bool) and bool_key is not None:
            return field(bool_key(key), match=match("value", "true" if value else "false"))
        if isinstance(value, float) and not value.is_integer():  # MatchValue takes str, int and bool only
            return field(key, range=rng(gte=value, lte=value))
        return field(key, match=match("value", int(value) if isinstance(value, float) else value))

    def any_of(key: str, values: tuple[Any, ...]) -> Any:
        plain = [int(v) if isinstance(v, float) and v.is_integer() else v for v in values]
        if all(isinstance(v, str) for v in plain) or all(isinstance(v, int) and not isinstance(v, bool)
                                                          for v in plain):
            return field(key, match=match("any", plain))
        return m.Filter(should=[eq(key, v) for v in values])  # mixed types, bools, fractions: one by one

    def conv(n: FilterNode) -> Any:
        if isinstance(n, Not):
            return m.Filter(must_not=[conv(n.item)])
        if isinstance(n, (And, Or)):
            parts = [conv(i) for i in n.items]
            return m.Filter(must=parts) if isinstance(n, And) else m.Filter(should=parts)
        key, op, v = n.key, n.op, n.value
        if op == "eq":
            return eq(key, v)
        if op == "ne":
            return m.Filter(must_not=[eq(key, v)])
        if op == "in":
            return any_of(key, v)
        if op == "nin":
            return m.Filter(must_not=[any_of(key, v)])
        if op == "exists":
            empty = m.IsEmptyCondition(key=key) if edge else m.IsEmptyCondition(is_empty=m.PayloadField(key=key))
            return m.Filter(must_not=[empty]) if v else m.Filter(must=[empty])
        return field(key, range=rng(**{op: v}))

    out = conv(node)
    return out if isinstance(out, m.Filter) else m.Filter(must=[out])
