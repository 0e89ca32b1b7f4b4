"""The small condition language of ``branches: - if: ...``.

Authors write conditions in near-English (``party_size > 8``, ``confirmed``, ``not verified``,
``reason is 'dispute'``, ``promise_date > today + 14 days``, ``caller.name is set``), so the
language is deliberately tiny: comparisons, ``and``/``or``/``not``, ``is set``/``is empty``
and parentheses. Bare words are slot names and text must be quoted, which is what lets the
checks report a misspelt slot instead of silently comparing against the word.

Parsing keeps character offsets so errors point at the exact column in the YAML file;
evaluation never raises, because a call must not crash on an unexpected slot value.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

__all__ = ["ConditionError", "Expr", "Name", "evaluate", "names", "parse_condition"]


class ConditionError(ValueError):
    """A condition that cannot be read; ``offset`` is the character index of the problem."""

    def __init__(self, offset: int, message: str) -> None:
        super().__init__(message)
        self.offset = offset
        self.message = message


@dataclass(frozen=True)
class Name:
    start: int
    scope: str  # "slot" or "caller"
    name: str


@dataclass(frozen=True)
class Literal:
    value: Any


@dataclass(frozen=True)
class Today:
    days: int = 0


@dataclass(frozen=True)
class Compare:
    op: str
    left: Operand
    right: Operand


@dataclass(frozen=True)
class Presence:
    operand: Operand
    what: str  # "set" or "empty"
    negate: bool


@dataclass(frozen=True)
class Truthy:
    operand: Operand


@dataclass(frozen=True)
class Not:
    inner: Expr


@dataclass(frozen=True)
class BoolOp:
    op: str  # "and" / "or"
    items: tuple[Expr, ...]


Operand = Name | Literal | Today
Expr = Compare | Presence | Truthy | Not | BoolOp

_TOKEN_RE = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<number>\d+(?:\.\d+)?)
  | (?P<string>'[^']*'|"[^"]*")
  | (?P<op>==|!=|>=|<=|>|<|=)
  | (?P<paren>[()])
  | (?P<sign>[+-])
  | (?P<word>[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)?)
    """,
    re.VERBOSE,
)
_KEYWORDS = frozenset({"and", "or", "not", "is", "set", "empty", "yes", "no", "true", "false", "today"})
_UNITS = {"day": 1, "days": 1, "week": 7, "weeks": 7}


@dataclass(frozen=True)
class _Tok:
    kind: str
    text: str
    start: int


def _tokenize(text: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN_RE.match(text, pos)
        if match is None:
            if text[pos] in "'\"":
                raise ConditionError(pos, f"text starting at {text[pos]} is missing its closing quote")
            raise ConditionError(pos, f"unexpected '{text[pos]}' in condition")
        kind = match.lastgroup or ""
        if kind != "space":
            out.append(_Tok(kind, match.group(), pos))
        pos = match.end()
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.toks = _tokenize(text)
        self.i = 0

    def peek(self, offset: int = 0) -> _Tok | None:
        j = self.i + offset
        return self.toks[j] if j < len(self.toks) else None

    def at_word(self, *words: str) -> bool:
        tok = self.peek()
        return tok is not None and tok.kind == "word" and tok.text.lower() in words

    def take(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise ConditionError(len(self.text), "the condition ends too early")
        self.i += 1
        return tok

    def parse(self) -> Expr:
        if not self.toks:
            raise ConditionError(0, "the condition is empty")
        expr = self.or_expr()
        tok = self.peek()
        if tok is not None:
            hint = " (join conditions with `and` or `or`)" if tok.kind in ("word", "number", "string") else ""
            raise ConditionError(tok.start, f"unexpected '{tok.text}' in condition{hint}")
        return expr

    def or_expr(self) -> Expr:
        items = [self.and_expr()]
        while self.at_word("or"):
            self.take()
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else BoolOp("or", tuple(items))

    def and_expr(self) -> Expr:
        items = [self.not_expr()]
        while self.at_word("and"):
            self.take()
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else BoolOp("and", tuple(items))

    def not_expr(self) -> Expr:
        if self.at_word("not"):
            self.take()
            return Not(self.not_expr())
        tok = self.peek()
        if tok is not None and tok.kind == "paren" and tok.text == "(":
            self.take()
            inner = self.or_expr()
            close = self.peek()
            if close is None or close.text != ")":
                raise ConditionError(close.start if close else len(self.text), "missing ')' in condition")
            self.take()
            return inner
        return self.comparison()

    def comparison(self) -> Expr:
        left = self.operand()
        tok = self.peek()
        if tok is not None and tok.kind == "op":
            if tok.text == "=":
                raise ConditionError(tok.start, "use `==` (or `is`) to compare, not `=`")
            self.take()
            return Compare(tok.text, left, self.operand())
        if self.at_word("is"):
            self.take()
            negate = False
            if self.at_word("not"):
                self.take()
                negate = True
            if self.at_word("set", "empty"):
                return Presence(left, self.take().text.lower(), negate)
            return Compare("!=" if negate else "==", left, self.operand())
        return Truthy(left)

    def operand(self) -> Operand:
        tok = self.take()
        if tok.kind == "number":
            return Literal(float(tok.text) if "." in tok.text else int(tok.text))
        if tok.kind == "string":
            return Literal(tok.text[1:-1])
        if tok.kind != "word":
            raise ConditionError(tok.start, f"expected a slot name, a number or 'quoted text', not '{tok.text}'")
        word = tok.text.lower()
        if word in ("yes", "true"):
            return Literal(True)
        if word in ("no", "false"):
            return Literal(False)
        if word == "today":
            return self.today()
        if word in _KEYWORDS:
            raise ConditionError(tok.start, f"expected a slot name, a number or 'quoted text', not '{tok.text}'")
        scope, dot, name = tok.text.partition(".")
        if dot:
            if scope != "caller":
                raise ConditionError(tok.start, f"unknown name '{tok.text}'; use a slot name or caller.<detail>")
            return Name(tok.start, "caller", name)
        return Name(tok.start, "slot", tok.text)

    def today(self) -> Today:
        sign = self.peek()
        if sign is None or sign.kind != "sign":
            return Today()
        self.take()
        amount = self.take()
        if amount.kind != "number" or "." in amount.text:
            raise ConditionError(amount.start, "after `today +` write a whole number of days, like `today + 14 days`")
        unit = self.peek()
        factor = 1
        if unit is not None and unit.kind == "word" and unit.text.lower() in _UNITS:
            factor = _UNITS[self.take().text.lower()]
        days = int(amount.text) * factor
        return Today(days if sign.text == "+" else -days)


@lru_cache(maxsize=1024)
def parse_condition(text: str) -> Expr:
    """Parse (cached: conditions are re-evaluated on every call that passes the branch)."""
    return _Parser(text).parse()


def names(expr: Expr) -> list[Name]:
    """Every slot/caller name the condition reads, for the "never set" check."""
    if isinstance(expr, Compare):
        return [x for x in (expr.left, expr.right) if isinstance(x, Name)]
    if isinstance(expr, Presence | Truthy):
        return [expr.operand] if isinstance(expr.operand, Name) else []
    if isinstance(expr, Not):
        return names(expr.inner)
    return [name for item in expr.items for name in names(item)]


# -- evaluation ----------------------------------------------------------------------------


def _value(operand: Operand, slots: Mapping[str, Any], caller: Mapping[str, Any], today: dt.date) -> Any:
    if isinstance(operand, Literal):
        return operand.value
    if isinstance(operand, Today):
        return today + dt.timedelta(days=operand.days)
    source = caller if operand.scope == "caller" else slots
    return source.get(operand.name)


def _coerce_pair(a: Any, b: Any) -> tuple[Any, Any] | None:
    """Bring two values to one comparable type, or ``None`` when they cannot be compared.

    Caller details arrive as text ("120"), slots are typed, so text is converted towards the
    other side's type instead of failing.
    """
    if isinstance(a, bool) or isinstance(b, bool):
        if isinstance(a, bool) and isinstance(b, bool):
            return a, b
        other, flag = (b, a) if isinstance(a, bool) else (a, b)
        if isinstance(other, str) and other.strip().lower() in ("yes", "true", "no", "false"):
            parsed = other.strip().lower() in ("yes", "true")
            return (flag, parsed) if isinstance(a, bool) else (parsed, flag)
        return None
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a, b
    if isinstance(a, int | float) and isinstance(b, str):
        try:
            return a, float(b.replace(",", ""))
        except ValueError:
            return None
    if isinstance(b, int | float) and isinstance(a, str):
        swapped = _coerce_pair(b, a)
        return None if swapped is None else (swapped[1], swapped[0])
    if isinstance(a, dt.date) and isinstance(b, dt.date):
        return a, b
    if isinstance(a, dt.time) and isinstance(b, dt.time):
        return a, b
    if isinstance(a, dt.date | dt.time) and isinstance(b, str):
        try:
            parsed = dt.date.fromisoformat(b) if isinstance(a, dt.date) else dt.time.fromisoformat(b)
        except ValueError:
            return None
        return a, parsed
    if isinstance(b, dt.date | dt.time) and isinstance(a, str):
        swapped = _coerce_pair(b, a)
        return None if swapped is None else (swapped[1], swapped[0])
    if isinstance(a, str) and isinstance(b, str):
        return a.strip().casefold(), b.strip().casefold()
    return None


_ORDER: dict[str, Callable[[Any, Any], bool]] = {
    ">": lambda x, y: x > y,
    ">=": lambda x, y: x >= y,
    "<": lambda x, y: x < y,
    "<=": lambda x, y: x <= y,
}


def _compare(op: str, a: Any, b: Any) -> bool:
    if a is None or b is None:
        return op == "!=" and (a is not None or b is not None)
    pair = _coerce_pair(a, b)
    if pair is None:
        return op == "!="
    x, y = pair
    if op == "==":
        return bool(x == y)
    if op == "!=":
        return bool(x != y)
    if isinstance(x, bool):
        return False
    try:
        return _ORDER[op](x, y)
    except TypeError:
        return False


def evaluate(
    expr: Expr | str, slots: Mapping[str, Any], caller: Mapping[str, Any] | None = None, *, today: dt.date
) -> bool:
    """Truth of a condition; unknown or mismatched values make comparisons false, never crash."""
    if isinstance(expr, str):
        expr = parse_condition(expr)
    caller = caller or {}
    if isinstance(expr, BoolOp):
        results = (evaluate(item, slots, caller, today=today) for item in expr.items)
        return all(results) if expr.op == "and" else any(results)
    if isinstance(expr, Not):
        return not evaluate(expr.inner, slots, caller, today=today)
    if isinstance(expr, Truthy):
        value = _value(expr.operand, slots, caller, today)
        if isinstance(value, str):
            return value.strip().lower() not in ("", "no", "false", "0")
        return bool(value) if value is not None else False
    if isinstance(expr, Presence):
        value = _value(expr.operand, slots, caller, today)
        missing = value is None or (isinstance(value, str) and not value.strip())
        result = (not missing) if expr.what == "set" else missing
        return not result if expr.negate else result
    return _compare(expr.op, _value(expr.left, slots, caller, today), _value(expr.right, slots, caller, today))
