"""A small, safe expression language evaluated column-wise with ``pyarrow.compute``.

Expressions are Python syntax parsed with :mod:`ast` and never ``eval``-ed::

    event_type == "OrderCreated" and amount_cents > 10_000
    is_null(amount_cents) or amount_cents >= 0
    event_type in ["OrderCreated", "PaymentProcessed"]
    amount_cents / 100

Names are columns; constants are numbers, strings, booleans and ``None``; operators are comparisons, ``and``,
``or``, ``not``, ``+ - * /``, unary minus and ``in``/``not in`` a list of constants; functions are the ones in
:data:`FUNCTIONS`. ``and``/``or`` follow Kleene logic, so a null compares as unknown, as in SQL.
"""

from __future__ import annotations

import ast
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipelines.errors import ExpressionError

__all__ = ["FUNCTIONS", "CompiledExpression", "compile_expression"]

Value = Any  # a pyarrow Array or Scalar

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


def _true_divide(left: Value, right: Value) -> Value:
    return pc.divide(pc.cast(left, pa.float64()), pc.cast(right, pa.float64()))


FUNCTIONS: dict[str, Callable[..., Value]] = {
    "is_null": pc.is_null,
    "is_valid": pc.is_valid,
    "lower": pc.utf8_lower,
    "upper": pc.utf8_upper,
    "length": pc.utf8_length,
    "abs": pc.abs,
    "round": pc.round,
    "floor": pc.floor,
    "ceil": pc.ceil,
    "coalesce": pc.coalesce,
    "starts_with": lambda column, prefix: pc.starts_with(column, pattern=_constant(prefix)),
    "ends_with": lambda column, suffix: pc.ends_with(column, pattern=_constant(suffix)),
    "contains": lambda column, text: pc.match_substring(column, pattern=_constant(text)),
    "to_float": lambda column: pc.cast(column, pa.float64()),
    "to_int": lambda column: pc.cast(column, pa.int64()),
    "to_string": lambda column: pc.cast(column, pa.string()),
}


def _constant(value: Value) -> Any:
    return value.as_py() if isinstance(value, pa.Scalar) else value


@dataclass(frozen=True)
class CompiledExpression:
    """A parsed expression; :meth:`evaluate` runs it on a batch and returns an Array of its rows."""

    text: str
    tree: ast.expr
    columns: frozenset[str]

    def evaluate(self, batch: pa.RecordBatch) -> pa.Array:
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
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
            name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise ExpressionError(f"expression {text!r}: unknown function {name!r}; choices: {sorted(FUNCTIONS)}")
        if node.keywords:
            raise ExpressionError(f"expression {text!r}: keyword arguments are not supported")
        for argument in node.args:
            _check_node(argument, text, columns)
        return
    allowed = (
        ast.BoolOp, ast.And, ast.Or, ast.UnaryOp, ast.Not, ast.USub, ast.BinOp, ast.Compare, ast.Constant,
        ast.List, ast.Tuple, ast.In, ast.NotIn, ast.Load,
        *_COMPARE, *_ARITHMETIC,
    )  # fmt: skip
    if not isinstance(node, allowed):
        raise ExpressionError(f"expression {text!r}: {type(node).__name__} is not supported here")
    for child in ast.iter_child_nodes(node):
        _check_node(child, text, columns)


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
            return self._compare(node)
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name)
            return FUNCTIONS[node.func.id](*(self._visit(argument) for argument in node.args))
        raise ExpressionError(f"expression {self._text!r}: {type(node).__name__} is not supported here")

    def _column(self, name: str) -> Value:
        index = self._batch.schema.get_field_index(name)
        if index < 0:
            raise ExpressionError(
                f"expression {self._text!r} names unknown column {name!r}; available: {self._batch.schema.names}"
            )
        return self._batch.column(index)

    def _binary(self, node: ast.BinOp) -> Value:
        left, right = self._visit(node.left), self._visit(node.right)
        if isinstance(node.op, ast.Div):
            return _true_divide(left, right)
        return pc.call_function(_ARITHMETIC[type(node.op)], [left, right])

    def _compare(self, node: ast.Compare) -> Value:
        result: Value = None
        left = self._visit(node.left)
        for operator, comparator in zip(node.ops, node.comparators, strict=True):
            if isinstance(operator, ast.In | ast.NotIn):
                if not isinstance(comparator, ast.List | ast.Tuple):
                    raise ExpressionError(f"expression {self._text!r}: 'in' needs a list of constants")
                values = pa.array([ast.literal_eval(element) for element in comparator.elts])
                right = None
                step = pc.is_in(left, value_set=values)
                if isinstance(operator, ast.NotIn):
                    step = pc.invert(step)
            else:
                right = self._visit(comparator)
                step = pc.call_function(_COMPARE[type(operator)], [left, right])
            result = step if result is None else pc.and_kleene(result, step)
            left = right
        return result
