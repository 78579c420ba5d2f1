"""The condition and quantity language of sequences.

Parsed by a small grammar (lark, LALR) and never ``eval``'d. Expressions are type-checked
against the signal catalog when a sequence is loaded: every signal must exist, units must
agree, and state names must be states of the signal they are compared with. What comes out is
a tree of closures over plain floats in base units, cheap enough to run on every sample.

    bms.cell_v_max > 4.25 V and not (bms.contactors == OPEN)
    bms.cell_temp_max > $t_max_op + 10 degC
    @t_interrupt - @t_overvoltage
    abs(psu.current) < 0.5 A

``dev.signal`` is a signal (``dev.Message.signal`` its message-qualified name), ``$name`` a
parameter, ``@name`` an instant recorded with ``as:``, a bare NAME or a quoted string
(``"No Error"``) a state of the signal on the other side of ``==`` / ``!=``.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import operator
import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import lark
from lark import Lark, Token, Tree
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput

from bench.errors import ExpressionError
from bench.suggest import did_you_mean
from bench.units import (
    CURRENT,
    DIMENSIONLESS,
    TEMPERATURE,
    TIME,
    VOLTAGE,
    Dim,
    Quantity,
    Unit,
    check_digits,
    dimension_name,
    format_value,
    has_unit,
    is_plain,
    mixing_error,
    parse_quantity,
)

_GRAMMAR = r"""
?start: expr
?expr: or_expr
?or_expr: and_expr ("or" and_expr)*
?and_expr: not_expr ("and" not_expr)*
?not_expr: "not" not_expr -> not_
         | comparison
?comparison: sum (COMPOP sum)?
?sum: product (ADDOP product)*
?product: unary (MULOP unary)*
?unary: "-" unary -> neg
      | atom
?atom: QUANTITY -> quantity
     | SIGNAL -> signal
     | PARAM -> param
     | MARK -> mark
     | FUNC "(" expr ")" -> call
     | NAME -> name
     | STRING -> string
     | "(" expr ")"
COMPOP: "==" | "!=" | "<=" | ">=" | "<" | ">"
ADDOP: "+" | "-"
MULOP: "*" | "/"
FUNC.2: /(abs)(?=\s*\()/
QUANTITY: /([0-9]+\.?[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?(\s*(?!(?:and|or|not)\b)(%vol|%|°C|Ω|µ?[A-Za-z][A-Za-z]*)([*\/](°C|Ω|µ?[A-Za-z][A-Za-z]*)(\^-?[0-9]+)?)*)?/
SIGNAL: /[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*){1,2}/
STRING: /"[^"\n]*"|'[^'\n]*'/
PARAM: /\$[A-Za-z_][A-Za-z0-9_]*/
MARK: /@[A-Za-z_][A-Za-z0-9_]*/
NAME: /[A-Za-z_][A-Za-z0-9_]*/
%import common.WS
%ignore WS
"""

_KEYWORDS = {"and", "or", "not"}


def _grammar_cache() -> str | None:
    """The file that keeps the grammar's LALR tables between processes, or None for no cache.

    Building them costs about 20 ms of every command that reads an expression (`bench validate`
    among them). The file is in the user's own cache folder, not in the shared temporary folder,
    since loading it unpickles it; a folder that others may write to is not used.
    """
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    folder = os.path.join(base, "hil-bench")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        st = os.stat(folder)
    except OSError:
        return None
    if st.st_uid != os.getuid() or st.st_mode & 0o022:
        return None  # a folder another user owns or may write to: it could hold a planted file
    return os.path.join(folder, "expression-grammar.lark")


def _grammar_key() -> bytes:
    """What the cached tables were built from: the grammar, lark's version and Python's."""
    return hashlib.sha256(f"{_GRAMMAR}{lark.__version__}{sys.version_info[:2]}".encode()).hexdigest().encode()


@lru_cache(maxsize=1)
def _parser() -> Lark:
    path, key = _grammar_cache(), _grammar_key()
    if path is not None:
        # A missing, damaged or stale file (other grammar, other lark) is built again.
        with contextlib.suppress(Exception), open(path, "rb") as f:
            if f.readline().rstrip(b"\n") == key:
                return Lark.load(f)
    parser = Lark(_GRAMMAR, parser="lalr", maybe_placeholders=False)
    if path is not None:
        # Written whole under another name and renamed: a reader in another process (a campaign's
        # workers) sees the old file or the new one, never a mix. A full disk costs the time only.
        part = f"{path}.{os.getpid()}.part"
        try:
            with open(part, "wb") as f:
                f.write(key + b"\n")
                parser.save(f)
            os.replace(part, path)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(part)
    return parser


# A condition is one line of a sequence; these bounds keep a hostile one from exhausting the
# parser or the (recursive) compiler.
MAX_EXPRESSION_CHARS = 1000
MAX_EXPRESSION_DEPTH = 50


@lru_cache(maxsize=4096)
def parse(text: str) -> Tree[Token] | Token:
    if len(text) > MAX_EXPRESSION_CHARS:
        raise ExpressionError(f"the expression is too long ({len(text)} characters, at most {MAX_EXPRESSION_CHARS})")
    check_digits(text)
    if _paren_depth(text) > MAX_EXPRESSION_DEPTH:
        raise ExpressionError(f"the expression is nested too deeply (more than {MAX_EXPRESSION_DEPTH} parentheses)")
    try:
        return _parser().parse(text)
    except UnexpectedCharacters as exc:
        raise ExpressionError(f"cannot read '{text}' at column {exc.column}") from None
    except UnexpectedEOF:
        raise ExpressionError(f"'{text}' ends too early") from None
    except UnexpectedInput as exc:
        tok = getattr(exc, "token", None)
        if tok is None or getattr(tok, "type", "") == "$END":
            raise ExpressionError(f"'{text}' ends too early") from None
        if str(tok) in _KEYWORDS:
            raise ExpressionError(f"unexpected '{tok}' in '{text}'") from None
        where = f" near '{tok}'" if tok is not None else ""
        raise ExpressionError(f"cannot read '{text}'{where}") from None
    except LarkError as exc:
        raise ExpressionError(f"cannot read '{text}': {exc}") from None


def _paren_depth(text: str) -> int:
    depth = deepest = 0
    for ch in text:
        depth += ch == "("
        depth -= ch == ")"
        deepest = max(deepest, depth)
    return deepest


@dataclass(frozen=True)
class SignalInfo:
    """What the engine knows about one signal before any device is connected."""

    name: str
    unit: Unit
    choices: Mapping[str, int] | None = None
    writable: bool = False
    minimum: float | None = None
    maximum: float | None = None
    doc: str = ""
    # Other names of the same signal: ``dev.Message.signal`` of a signal whose short name is
    # its name. A catalog holds each alias as a key too, with this same info as its value.
    aliases: tuple[str, ...] = ()

    def state_name(self, value: float) -> str | None:
        if not self.choices:
            return None
        for k, v in self.choices.items():
            if v == value:
                return k
        return None


class Env:
    """What expressions read at run time: latest signal values and recorded instants.

    ``why_unknown`` says why the last evaluation that came out unknown (None) did, when it was
    not a missing sample (a division by zero).
    """

    __slots__ = ("marks", "values", "why_unknown")

    def __init__(self, values: dict[str, float], marks: dict[str, float]) -> None:
        self.values = values
        self.marks = marks
        self.why_unknown: str | None = None


Value = float | bool | None
Fn = Callable[[Env], Any]

# Static types of compiled nodes.
NUM, BOOL, STATE = "num", "bool", "state"


@dataclass
class Compiled:
    kind: str  # NUM, BOOL or STATE
    fn: Fn
    dim: Dim = DIMENSIONLESS
    signals: frozenset[str] = frozenset()
    marks: frozenset[str] = frozenset()
    constant: bool = False
    choices: Mapping[str, int] | None = None  # for a bare signal with states
    state: str = ""  # for a bare NAME
    display_unit: Unit | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class Scope:
    """Names an expression may use: the signal catalog, parameters and marks."""

    def __init__(
        self,
        signals: Mapping[str, SignalInfo],
        params: Mapping[str, Quantity],
        marks: frozenset[str] = frozenset(),
        opaque: frozenset[str] | None = None,
    ) -> None:
        self.signals = signals
        self.params = params
        self.marks = marks
        # Unit strings that may be written after a number: the opaque units of the signals.
        self.opaque = opaque_units(signals) if opaque is None else opaque


def opaque_units(signals: Mapping[str, SignalInfo]) -> frozenset[str]:
    return frozenset(info.unit.text for info in signals.values() if info.unit.opaque)


def resolve_signal(name: str, signals: Mapping[str, SignalInfo]) -> SignalInfo:
    """The signal ``name`` (short or message-qualified) refers to, or an error that says why none.

    A short name that several messages share is an error listing the qualified candidates: a
    supplier's DBC often has the same signal name in more than one message, and picking one
    silently would let a wait be satisfied by the wrong frame.
    """
    info = signals.get(name)
    if info is not None:
        return info
    parts = name.split(".")
    device = parts[0]
    known = sorted({s.split(".", 1)[0] for s in signals})
    if device not in known:
        raise ExpressionError(
            f"unknown device '{device}' in '{name}' (devices: {', '.join(known)}){did_you_mean(device, known)}"
        )
    if len(parts) == 2:
        candidates = sorted(
            {
                n
                for n, i in signals.items()
                if n == i.name and n.startswith(device + ".") and n.count(".") == 2 and n.endswith("." + parts[1])
            }
        )
        if candidates:
            raise ExpressionError(
                f"'{name}' is ambiguous: {parts[1]} is in {len(candidates)} messages; write {' or '.join(candidates)}"
            )
    of_device = [n for n in signals if n.startswith(device + ".")]
    raise ExpressionError(f"unknown signal '{name}'{did_you_mean(name, of_device)}")


def compile_expr(text: str, scope: Scope) -> Compiled:
    return _compile(parse(str(text)), scope)


def compile_condition(text: str, scope: Scope) -> Compiled:
    c = compile_expr(text, scope)
    if c.kind != BOOL:
        raise ExpressionError(f"'{text}' is not a condition (it has no comparison)")
    return c


def constant(text: str, scope: Scope) -> Quantity:
    """Evaluate an expression that must not depend on signals or marks (limits, durations)."""
    c = compile_expr(text, scope)
    if c.kind != NUM:
        raise ExpressionError(f"'{text}' is not a quantity")
    if not c.constant:
        raise ExpressionError(f"'{text}' must be a constant (no signals or @marks)")
    value = c.fn(Env({}, {}))
    if value is None or not math.isfinite(value):
        raise ExpressionError(f"'{text}' is not a finite number")
    unit = c.display_unit or _base_unit(c.dim)
    return Quantity(float(value), c.dim, unit)


def expect_dim(q: Quantity | Compiled, dim: Dim, what: str) -> None:
    if q.dim != dim:
        raise ExpressionError(f"{what} must be a {dimension_name(dim)}, got a {dimension_name(q.dim)}")


def _base_unit(dim: Dim) -> Unit:
    names = {TIME: "s", CURRENT: "A", VOLTAGE: "V", TEMPERATURE: "K"}
    return Unit(names.get(dim, ""), dim, 1.0)


def _tok(tree: Tree[Token] | Token) -> str:
    return str(tree)


_CMP: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _compile(node: Tree[Token] | Token, scope: Scope) -> Compiled:
    if isinstance(node, Token):  # pragma: no cover - every terminal is wrapped by an alias
        raise ExpressionError(f"unexpected '{node}'")
    data = node.data
    kids = node.children
    if data == "quantity":
        q = parse_quantity(_tok(kids[0]), scope.opaque)
        base = q.base
        return Compiled(NUM, lambda env: base, q.dim, constant=True, display_unit=q.unit, extra={"text": _tok(kids[0])})
    if data == "signal":
        return _signal(_tok(kids[0]), scope)
    if data == "param":
        name = _tok(kids[0])[1:]
        if name not in scope.params:
            raise ExpressionError(f"unknown parameter '${name}'{did_you_mean(name, scope.params, '$')}")
        pq = scope.params[name]
        pbase = pq.base
        return Compiled(NUM, lambda env: pbase, pq.dim, constant=True, display_unit=pq.unit)
    if data == "mark":
        name = _tok(kids[0])[1:]
        if name not in scope.marks:
            raise ExpressionError(
                f"unknown instant '@{name}' (not recorded by an earlier step's 'as:')"
                + did_you_mean(name, scope.marks, "@")
            )

        def mark(env: Env, name: str = name) -> Value:
            return env.marks.get(name)

        return Compiled(NUM, mark, TIME, marks=frozenset([name]), display_unit=_base_unit(TIME))
    if data == "name":
        name = _tok(kids[0])
        if name in ("true", "false", "TRUE", "FALSE", "True", "False"):
            b = name.lower() == "true"
            return Compiled(BOOL, lambda env: b, constant=True)
        return Compiled(STATE, lambda env: None, state=name, constant=True)
    if data == "string":
        return Compiled(STATE, lambda env: None, state=_tok(kids[0])[1:-1], constant=True)
    if data == "neg":
        c = _num(_compile(kids[0], scope), "-")
        f = c.fn
        # A temperature on the Celsius scale is negated on that scale: -20 degC is 253.15 K,
        # not the -293.15 K that negating its kelvin value would give. Off the base value, the
        # reading is (v - off) / factor; its negation in base units is 2 * off - v.
        off = c.display_unit.offset if c.display_unit is not None else 0.0
        return _derive(c, lambda env: None if (v := f(env)) is None else 2.0 * off - v, c.dim, [c])
    if data == "call":
        func = _tok(kids[0])
        c = _num(_compile(kids[1], scope), func)
        f = c.fn
        return _derive(c, lambda env: None if (v := f(env)) is None else abs(v), c.dim, [c])
    if data == "not_":
        c = _compile(kids[0], scope)
        if c.kind != BOOL:
            raise ExpressionError("'not' needs a condition")
        f = c.fn
        return _derive(c, lambda env: None if (v := f(env)) is None else not v, DIMENSIONLESS, [c], BOOL)
    if data in ("and_expr", "or_expr"):
        parts = [_compile(k, scope) for k in kids]
        for p in parts:
            if p.kind != BOOL:
                raise ExpressionError(f"'{'and' if data == 'and_expr' else 'or'}' needs conditions on both sides")
        fns = [p.fn for p in parts]
        fn = _and(fns) if data == "and_expr" else _or(fns)
        return _derive(parts[0], fn, DIMENSIONLESS, parts, BOOL)
    if data == "sum":
        return _arith(kids, scope)
    if data == "product":
        return _arith(kids, scope)
    if data == "comparison":
        return _comparison(kids, scope)
    raise ExpressionError(f"unsupported expression '{data}'")  # pragma: no cover


def _signal(written: str, scope: Scope) -> Compiled:
    info = resolve_signal(written, scope.signals)
    name = info.name  # what the driver publishes, whichever name was written
    factor, offset = info.unit.factor, info.unit.offset

    def read(env: Env) -> Value:
        v = env.values.get(name)
        return None if v is None else v * factor + offset

    return Compiled(
        NUM,
        read,
        info.unit.dim,
        signals=frozenset([name]),
        choices=info.choices,
        display_unit=info.unit,
        extra={"signal": info},
    )


def _num(c: Compiled, what: str) -> Compiled:
    if c.kind == STATE:
        raise ExpressionError(f"state name '{c.state}' can only be compared with == or != to a signal")
    if c.kind != NUM:
        raise ExpressionError(f"'{what}' needs a number")
    return c


def _derive(first: Compiled, fn: Fn, dim: Dim, parts: list[Compiled], kind: str = NUM) -> Compiled:
    return Compiled(
        kind,
        fn,
        dim,
        signals=frozenset().union(*(p.signals for p in parts)),
        marks=frozenset().union(*(p.marks for p in parts)),
        constant=all(p.constant for p in parts),
        display_unit=first.display_unit if kind == NUM else None,
    )


def _and(fns: list[Fn]) -> Fn:
    def fn(env: Env) -> Value:
        unknown = False
        for f in fns:
            v = f(env)
            if v is False:
                return False
            if v is None:
                unknown = True
        return None if unknown else True

    return fn


def _or(fns: list[Fn]) -> Fn:
    def fn(env: Env) -> Value:
        unknown = False
        for f in fns:
            v = f(env)
            if v is True:
                return True
            if v is None:
                unknown = True
        return None if unknown else False

    return fn


def _arith(kids: list[Any], scope: Scope) -> Compiled:
    acc = _num(_compile(kids[0], scope), str(kids[1]) if len(kids) > 1 else "")
    i = 1
    while i < len(kids):
        op = str(kids[i])
        rhs = _num(_compile(kids[i + 1], scope), op)
        opaque_involved, opaque_unit = _opaque_arith(acc, op, rhs)
        if op in "+-":
            if acc.dim != rhs.dim:
                raise ExpressionError(
                    f"cannot {'add' if op == '+' else 'subtract'} a {dimension_name(rhs.dim)} "
                    f"{'to' if op == '+' else 'from'} a {dimension_name(acc.dim)}"
                )
            dim = acc.dim
            rhs_fn = rhs.fn
            if rhs.display_unit is not None and rhs.display_unit.offset and rhs.constant:
                # The right side of + or - is a difference: drop the Celsius offset.
                off = rhs.display_unit.offset
                inner = rhs.fn

                def rhs_fn(env: Env, inner: Fn = inner, off: float = off) -> Value:
                    v = inner(env)
                    return None if v is None else v - off

            py = operator.add if op == "+" else operator.sub
        else:
            sign = 1 if op == "*" else -1
            dim = tuple(a + sign * b for a, b in zip(acc.dim, rhs.dim, strict=True))  # type: ignore[assignment]
            rhs_fn = rhs.fn
            py = operator.mul if op == "*" else operator.truediv
            if op == "/" and rhs.constant and rhs.fn(Env({}, {})) == 0:
                raise ExpressionError("division by zero")
        if op in "+-":
            _refuse_bare_number(acc, rhs)
        lf, rf = acc.fn, rhs_fn

        def fn(env: Env, lf: Fn = lf, rf: Fn = rf, py: Callable[[Any, Any], Any] = py) -> Value:
            a = lf(env)
            if a is None:
                return None
            b = rf(env)
            if b is None:
                return None
            try:
                return float(py(a, b))
            except ZeroDivisionError:
                # Unknown, like a missing sample, so a monitor neither trips nor crashes on it;
                # the reason is kept for the message of a step that cannot be evaluated.
                env.why_unknown = "division by zero"
                return None

        unit = acc.display_unit if (op in "+-" or rhs.dim == DIMENSIONLESS) else None
        if op in "*/" and acc.dim == DIMENSIONLESS and op == "*":
            unit = rhs.display_unit
        if unit is not None and unit.offset and op in "*/":
            unit = None
        if opaque_involved:
            unit = opaque_unit
        acc = _derive(acc, fn, dim, [acc, rhs])
        acc.display_unit = unit
        i += 2
    return acc


def _opaque_arith(a: Compiled, op: str, b: Compiled) -> tuple[bool, Unit | None]:
    """Whether an opaque unit takes part in ``a op b``, and then the unit of the result (None: a plain number).

    An opaque unit is added to, subtracted from and compared with only itself or a plain number;
    it is scaled by a plain number; a ratio of two values in the same opaque unit is a plain number.
    """
    ua, ub = a.display_unit, b.display_unit
    if not ((ua is not None and ua.opaque) or (ub is not None and ub.opaque)):
        return False, None
    verb = {"+": "add", "-": "subtract", "*": "multiply", "/": "divide"}[op]
    if op in "+-":
        err = mixing_error(ua, ub, verb)
        if err:
            raise ExpressionError(err)
        return True, ua if ua is not None and ua.opaque else ub
    if op == "/" and ub is not None and ub.opaque:
        if ua is not None and ua.opaque and ua.text == ub.text:
            return True, None
        raise ExpressionError(
            f"cannot divide a value in {_unit_text(a)} by a value in {ub.text} ({ub.text} is the DBC's own unit)"
        )
    opaque, other = (a, b) if ua is not None and ua.opaque else (b, a)
    if not is_plain(other.display_unit):
        assert opaque.display_unit is not None
        raise ExpressionError(
            f"cannot {verb} a value in {opaque.display_unit.text} with a value in {_unit_text(other)}"
            f" ({opaque.display_unit.text} is the DBC's own unit)"
        )
    return True, opaque.display_unit


def _comparison(kids: list[Any], scope: Scope) -> Compiled:
    lhs, op, rhs = _compile(kids[0], scope), str(kids[1]), _compile(kids[2], scope)
    if lhs.kind == STATE and rhs.kind == NUM:
        lhs, rhs = rhs, lhs
    if rhs.kind == STATE:
        if lhs.kind != NUM or not lhs.choices:
            raise ExpressionError(f"'{rhs.state}' is a state name, but the other side is not a signal with states")
        if op not in ("==", "!="):
            raise ExpressionError(f"states can only be compared with == or != (got '{op}')")
        code = _choice(lhs.choices, rhs.state, lhs)
        lf = lhs.fn
        cmp = _CMP[op]

        def state_fn(env: Env) -> Value:
            v = lf(env)
            return None if v is None else cmp(v, code)

        return _derive(lhs, state_fn, DIMENSIONLESS, [lhs], BOOL)
    if lhs.kind != NUM or rhs.kind != NUM:
        raise ExpressionError(f"'{op}' compares two quantities")
    err = mixing_error(lhs.display_unit, rhs.display_unit)
    if err:
        raise ExpressionError(err)
    if lhs.dim != rhs.dim:
        raise ExpressionError(
            f"unit mismatch: cannot compare a {dimension_name(lhs.dim)} "
            f"({_unit_text(lhs)}) with a {dimension_name(rhs.dim)} ({_unit_text(rhs)})"
        )
    _refuse_bare_number(lhs, rhs)
    lf, rf, cmp = lhs.fn, rhs.fn, _CMP[op]

    def fn(env: Env) -> Value:
        a = lf(env)
        if a is None:
            return None
        b = rf(env)
        if b is None:
            return None
        return bool(cmp(a, b))

    return _derive(lhs, fn, DIMENSIONLESS, [lhs, rhs], BOOL)


def _refuse_bare_number(a: Compiled, b: Compiled) -> None:
    """A bare number next to a quantity in % (or ppm, %vol) is a fraction: ``bms.soc < 60`` is always true."""
    for bare, other in ((a, b), (b, a)):
        if _is_bare(bare) and other.display_unit is not None and has_unit(other.display_unit):
            number = bare.extra.get("text") or format_value(bare.fn(Env({}, {})))
            info = other.extra.get("signal")
            name = info.name if isinstance(info, SignalInfo) else "the other side"
            unit = other.display_unit.text
            raise ExpressionError(f"'{number}' has no unit, but {name} is in {unit}: write '{number} {unit}'")


def _is_bare(c: Compiled) -> bool:
    return (
        c.kind == NUM and c.constant and c.dim == DIMENSIONLESS and (c.display_unit is None or not c.display_unit.text)
    )


def _unit_text(c: Compiled) -> str:
    return c.display_unit.text if c.display_unit is not None and c.display_unit.text else "no unit"


def _choice(choices: Mapping[str, int], state: str, sig: Compiled) -> int:
    for k, v in choices.items():
        if k.lower() == state.lower():
            return v
    info = sig.extra.get("signal")
    label = info.name if isinstance(info, SignalInfo) else "the signal"
    raise ExpressionError(
        f"{label} has no state '{state}' (states: {state_list(choices)}){did_you_mean(state, choices)}"
    )


def quote_state(name: str) -> str:
    """A state name as it can be written in a condition: bare when it is a word, else in quotes."""
    return name if name.isidentifier() and name not in _KEYWORDS else f'"{name}"'


def state_list(choices: Mapping[str, int]) -> str:
    return ", ".join(quote_state(k) for k in choices)


def state_value(info: SignalInfo, text: str) -> int | None:
    """The code of a state name of ``info`` (bare or in quotes), case-insensitively, or None."""
    if not info.choices:
        return None
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        text = text[1:-1]
    for k, v in info.choices.items():
        if k.lower() == text.lower():
            return v
    return None
