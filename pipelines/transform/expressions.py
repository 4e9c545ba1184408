"""A small, safe expression language evaluated column-wise with ``pyarrow.compute``.

Expressions are Python syntax parsed with :mod:`ast` and never ``eval``-ed::

    event_type == "OrderCreated" and amount_cents > 10_000
    is_null(amount_cents) or amount_cents >= 0
    event_type in ["OrderCreated", "PaymentProcessed"]
    amount_cents / 100
    customer.address.zip == "10115" and list_size(items) > 0

Names are columns; a dotted path (``customer.address.zip``) is a member of a struct column, at any depth (null
where any struct on the way is null); constants are numbers (integers within int64), strings, booleans and
``None``; operators are comparisons, ``and``, ``or``, ``not``, ``+ - * /``, unary minus and ``in``/``not in`` a
list of constants; functions are the ones in :data:`FUNCTIONS`, each with a fixed list of arguments
(``list_size(items)`` counts a list's or a map's items, ``map_get(attributes, "color")`` is a map's value for a
key, null without it). Logic is Kleene logic, as in SQL: a null compares as unknown (``==``, ``<``, ``in`` ...
give null), and ``and``/``or`` treat null as unknown.

Everything that can be checked without data (syntax, functions and their arguments, constants, ``in`` lists,
paths that start at a column) is checked by :func:`compile_expression`; what depends on column types (a path's
members, a function's argument types) is checked when evaluated. Both raise
:class:`~pipelines.errors.ExpressionError`.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.errors import ExpressionError

__all__ = ["FUNCTIONS", "CompiledExpression", "Function", "compile_expression"]

Value = Any  # a pyarrow Array or Scalar
ArgumentKind = Literal["value", "text", "key"]

_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_COMPARE: dict[type[ast.cmpop], str] = {
    ast.Eq: "equal",
    ast.NotEq: "not_equal",
    ast.Lt: "less",
    ast.LtE: "less_equal",
    ast.Gt: "greater",
    ast.GtE: "greater_equal",
}
_ARITHMETIC: dict[type[ast.operator], str] = {
    ast.Add: "add_checked",
    ast.Sub: "subtract_checked",
    ast.Mult: "multiply_checked",
    ast.Div: "divide",
}
_ALLOWED_NODES = (
    ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.BinOp, ast.Compare, ast.Constant, ast.Load,
    *_COMPARE, *_ARITHMETIC,
)  # fmt: skip


@dataclass(frozen=True)
class Function:
    """A function of the language: the kernel it runs and the arguments it takes.

    Each argument is a ``"value"`` (any expression, evaluated to an Array or Scalar), a ``"text"`` (a string
    constant, passed to the kernel as a ``str``) or a ``"key"`` (a string or integer constant: a map key). With
    ``variadic``, the last argument may repeat (at least once).
    """

    kernel: Callable[..., Value]
    arguments: tuple[ArgumentKind, ...] = ("value",)
    variadic: bool = False

    @property
    def signature(self) -> str:
        """The arguments as shown in error messages, e.g. ``(value, string constant)``."""
        names = [_ARGUMENT_NAMES[kind] for kind in self.arguments]
        return f"({', '.join(names)}{', ...' if self.variadic else ''})"

    def accepts(self, count: int) -> bool:
        return count >= len(self.arguments) if self.variadic else count == len(self.arguments)

    def kind_of(self, position: int) -> ArgumentKind:
        return self.arguments[min(position, len(self.arguments) - 1)]


_ARGUMENT_NAMES: dict[ArgumentKind, str] = {
    "value": "value",
    "text": "string constant",
    "key": "string or integer constant",
}


def _list_size(values: Value) -> Value:
    """How many items each list (or map) holds; null for a null one."""
    if pa.types.is_map(values.type):  # a map is a list of key/value entries
        entries = pa.list_(pa.struct([values.type.key_field, values.type.item_field]))
        return pc.list_value_length(values.cast(entries))
    if not pa.types.is_list(values.type):
        raise pa.ArrowTypeError(f"list_size takes a list or a map, not a value of type {values.type}")
    return pc.list_value_length(values)


def _map_get(values: Value, key: str | int) -> Value:
    """Each map's value for ``key`` (its first, were it given twice); null without it or for a null map."""
    if not pa.types.is_map(values.type):
        raise pa.ArrowTypeError(f"map_get takes a map, not a value of type {values.type}")
    key_type = values.type.key_type
    if isinstance(key, str) != pa.types.is_string(key_type):
        raise pa.ArrowTypeError(f"map_get: the key {key!r} is not a {key_type}, the map's key type")
    return pc.map_lookup(values, pa.scalar(key, key_type), "first")


FUNCTIONS: dict[str, Function] = {
    "is_null": Function(pc.is_null),
    "is_valid": Function(pc.is_valid),
    "lower": Function(pc.utf8_lower),
    "upper": Function(pc.utf8_upper),
    "length": Function(pc.utf8_length),
    "abs": Function(pc.abs),
    "round": Function(pc.round),
    "floor": Function(pc.floor),
    "ceil": Function(pc.ceil),
    "coalesce": Function(pc.coalesce, variadic=True),
    "concat": Function(lambda *parts: pc.binary_join_element_wise(*parts, ""), ("value", "value"), variadic=True),
    "starts_with": Function(lambda column, prefix: pc.starts_with(column, pattern=prefix), ("value", "text")),
    "ends_with": Function(lambda column, suffix: pc.ends_with(column, pattern=suffix), ("value", "text")),
    "contains": Function(lambda column, text: pc.match_substring(column, pattern=text), ("value", "text")),
    "to_float": Function(lambda column: pc.cast(column, pa.float64())),
    "to_int": Function(lambda column: pc.cast(column, pa.int64())),
    "to_string": Function(lambda column: pc.cast(column, pa.string())),
    "list_size": Function(_list_size),
    "map_get": Function(_map_get, ("value", "key")),
}


@dataclass(frozen=True)
class CompiledExpression:
    """A parsed expression; :meth:`evaluate` runs it on a batch and returns an Array of its rows."""

    text: str
    tree: ast.expr
    columns: frozenset[str]  # the columns it reads (a path's root column)

    def evaluate(self, batch: pa.RecordBatch) -> pa.Array:
        """One value per row of ``batch``; raise :class:`ExpressionError` if it cannot run on these columns."""
        result = _Evaluator(batch, self.text).visit(self.tree)
        if isinstance(result, pa.Scalar):
            return pa.array([result.as_py()] * batch.num_rows, type=result.type)
        if isinstance(result, pa.ChunkedArray):
            return result.combine_chunks()
        return result

    def check_columns(self, available: Sequence[str]) -> None:
        """Raise :class:`ExpressionError` naming the choices if a column is unknown."""
        missing = sorted(self.columns - set(available))
        if missing:
            raise ExpressionError(
                f"expression {self.text!r} names unknown column(s) {missing}; available: {sorted(available)}"
            )


def compile_expression(text: str) -> CompiledExpression:
    """Parse ``text`` and check that it uses only the supported subset; raise :class:`ExpressionError`."""
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError as error:
        raise ExpressionError(f"expression {text!r} is not valid: {error.msg} at column {error.offset}") from None
    columns: set[str] = set()
    _check_node(tree, text, columns)
    return CompiledExpression(text=text, tree=tree, columns=frozenset(columns))


def _check_node(node: ast.AST, text: str, columns: set[str]) -> None:
    if isinstance(node, ast.Name):
        columns.add(node.id)
        return
    if isinstance(node, ast.Attribute):
        columns.add(_path_root(node, text))
        return
    if isinstance(node, ast.Call):
        _check_call(node, text, columns)
        return
    if isinstance(node, ast.Compare) and _is_membership(node):
        _check_membership(node, text)
        _check_node(node.left, text, columns)
        return
    if isinstance(node, ast.Constant):
        _check_constant(node.value, text)
    if not isinstance(node, _ALLOWED_NODES):
        raise ExpressionError(f"expression {text!r}: {type(node).__name__} is not supported here")
    for child in ast.iter_child_nodes(node):
        _check_node(child, text, columns)


def _path_root(node: ast.Attribute, text: str) -> str:
    """The column a member path (``customer.address.zip``) starts at."""
    root: ast.expr = node
    while isinstance(root, ast.Attribute):
        root = root.value
    if not isinstance(root, ast.Name):
        raise ExpressionError(
            f"expression {text!r}: {ast.unparse(node)!r} is not a path; a path starts at a column and names struct "
            "members (customer.address.zip)"
        )
    return root.id


def _check_constant(value: object, text: str) -> None:
    if isinstance(value, int) and not isinstance(value, bool) and not _INT64_MIN <= value <= _INT64_MAX:
        raise ExpressionError(f"expression {text!r}: the integer {value} does not fit in int64")


def _check_call(node: ast.Call, text: str, columns: set[str]) -> None:
    if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
        name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
        raise ExpressionError(f"expression {text!r}: unknown function {name!r}; choices: {sorted(FUNCTIONS)}")
    if node.keywords:
        raise ExpressionError(f"expression {text!r}: keyword arguments are not supported")
    name, function = node.func.id, FUNCTIONS[node.func.id]
    if not function.accepts(len(node.args)):
        raise ExpressionError(
            f"expression {text!r}: {name} takes {function.signature}, not {len(node.args)} argument(s)"
        )
    for position, argument in enumerate(node.args):
        kind = function.kind_of(position)
        if kind == "value":
            _check_node(argument, text, columns)
        elif not _is_constant_argument(argument, kind):
            raise ExpressionError(
                f"expression {text!r}: argument {position + 1} of {name} must be a {_ARGUMENT_NAMES[kind]}; "
                f"{name} takes {function.signature}"
            )


def _is_constant_argument(node: ast.expr, kind: ArgumentKind) -> bool:
    """Whether ``node`` is a constant of ``kind``: a string for ``text``; a string or an integer within int64
    (not a bool) for ``key``."""
    try:
        value = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return False
    if isinstance(value, str):
        return True
    return kind == "key" and type(value) is int and _INT64_MIN <= value <= _INT64_MAX


def _is_membership(node: ast.Compare) -> bool:
    return any(isinstance(operator, ast.In | ast.NotIn) for operator in node.ops)


def _check_membership(node: ast.Compare, text: str) -> None:
    """``left in [constants]``, alone: not chained with other comparisons."""
    if len(node.ops) > 1:
        raise ExpressionError(f"expression {text!r}: 'in' cannot be chained with other comparisons")
    (comparator,) = node.comparators
    if not isinstance(comparator, ast.List | ast.Tuple):
        raise ExpressionError(f"expression {text!r}: 'in' needs a list of constants")
    for element in comparator.elts:
        _check_constant(_list_constant(element, text), text)


def _list_constant(element: ast.expr, text: str) -> str | int | float | None:
    """The value of one element of an ``in`` list: a string, number, boolean or None, possibly negated."""
    try:
        value = ast.literal_eval(element)
    except (ValueError, TypeError):
        value = element  # not a literal at all
    if value is not None and not isinstance(value, str | int | float):
        raise ExpressionError(
            f"expression {text!r}: 'in' needs a list of constants; {ast.unparse(element)!r} is not one"
        )
    return value


class _Evaluator:
    def __init__(self, batch: pa.RecordBatch, text: str) -> None:
        self._batch = batch
        self._text = text

    def visit(self, node: ast.expr) -> Value:
        try:
            return self._visit(node)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as error:
            raise ExpressionError(f"expression {self._text!r} cannot be evaluated: {error}") from None

    def _visit(self, node: ast.expr) -> Value:  # noqa: PLR0911 - one branch per syntax node kind
        if isinstance(node, ast.Name):
            return self._column(node.id)
        if isinstance(node, ast.Attribute):
            return self._member(node)
        if isinstance(node, ast.Constant):
            return pa.scalar(node.value)
        if isinstance(node, ast.BoolOp):
            combine = pc.and_kleene if isinstance(node.op, ast.And) else pc.or_kleene
            result = self._visit(node.values[0])
            for value in node.values[1:]:
                result = combine(result, self._visit(value))
            return result
        if isinstance(node, ast.UnaryOp):
            operand = self._visit(node.operand)
            return pc.invert(operand) if isinstance(node.op, ast.Not) else pc.negate_checked(operand)
        if isinstance(node, ast.BinOp):
            return self._binary(node)
        if isinstance(node, ast.Compare):
            return self._membership(node) if _is_membership(node) else self._compare(node)
        if isinstance(node, ast.Call):
            return self._call(node)
        raise ExpressionError(f"expression {self._text!r}: {type(node).__name__} is not supported here")

    def _column(self, name: str) -> Value:
        index = self._batch.schema.get_field_index(name)
        if index < 0:
            raise ExpressionError(
                f"expression {self._text!r} names unknown column {name!r}; available: {self._batch.schema.names}"
            )
        return self._batch.column(index)

    def _member(self, node: ast.Attribute) -> Value:
        """A struct member: the value of ``node.value`` must be a struct that has it."""
        parent = self._visit(node.value)
        path, parent_path = ast.unparse(node), ast.unparse(node.value)
        if not pa.types.is_struct(parent.type):
            raise ExpressionError(
                f"expression {self._text!r}: {path!r} names a member of {parent_path!r}, which is of type "
                f"{parent.type}, not a struct; paths reach struct members only (a list: list_size, a map: map_get)"
            )
        index = parent.type.get_field_index(node.attr)
        if index < 0:
            members = [field.name for field in parent.type]
            raise ExpressionError(
                f"expression {self._text!r}: {path!r}: {parent_path!r} has no member {node.attr!r}; its members: "
                f"{members}"
            )
        return pc.struct_field(parent, [index])

    def _call(self, node: ast.Call) -> Value:
        assert isinstance(node.func, ast.Name)
        function = FUNCTIONS[node.func.id]
        arguments = [
            self._visit(argument) if function.kind_of(position) == "value" else ast.literal_eval(argument)
            for position, argument in enumerate(node.args)
        ]
        return function.kernel(*arguments)

    def _binary(self, node: ast.BinOp) -> Value:
        left, right = self._visit(node.left), self._visit(node.right)
        if isinstance(node.op, ast.Div):
            return pc.divide(pc.cast(left, pa.float64()), pc.cast(right, pa.float64()))
        return pc.call_function(_ARITHMETIC[type(node.op)], [left, right])

    def _compare(self, node: ast.Compare) -> Value:
        result: Value = None
        left = self._visit(node.left)
        for operator, comparator in zip(node.ops, node.comparators, strict=True):
            right = self._visit(comparator)
            step = pc.call_function(_COMPARE[type(operator)], [left, right])
            result = step if result is None else pc.and_kleene(result, step)
            left = right
        return result

    def _membership(self, node: ast.Compare) -> Value:
        """``in`` as SQL's ``IN``: null if the left side is null or (not found and) the list holds a null."""
        left = self._visit(node.left)
        comparator = node.comparators[0]
        assert isinstance(comparator, ast.List | ast.Tuple)
        values = [ast.literal_eval(element) for element in comparator.elts]
        found = pc.is_in(left, value_set=pa.array([value for value in values if value is not None]))
        if values:
            unknown = pc.is_null(left) if None not in values else pc.or_(pc.is_null(left), pc.invert(found))
            found = pc.if_else(unknown, pa.scalar(None, pa.bool_()), found)
        return pc.invert(found) if isinstance(node.ops[0], ast.NotIn) else found
