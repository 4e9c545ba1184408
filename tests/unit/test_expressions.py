"""The expression language: column-wise evaluation, Kleene logic, and what it refuses to run."""

from __future__ import annotations

import re
from typing import cast

import pyarrow as pa
import pytest

from pipelines.errors import ExpressionError
from pipelines.transform.expressions import FUNCTIONS, compile_expression

BATCH = pa.record_batch(
    {
        "a": pa.array([1, None, 3, 4], pa.int64()),
        "s": pa.array(["x", "Yy", None, "zed"]),
        "f": pa.array([True, None, False, True]),
        "g": pa.array([None, None, True, False], pa.bool_()),
        "x": pa.array([0.5, 1.5, None, -2.0]),
    }
)


def run(text: str) -> list[object]:
    return cast("list[object]", compile_expression(text).evaluate(BATCH).to_pylist())


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a == 3", [False, None, True, False]),
        ("a != 3", [True, None, False, True]),
        ("a < 3", [True, None, False, False]),
        ("a <= 3", [True, None, True, False]),
        ("a > 2", [False, None, True, True]),
        ("a >= 3", [False, None, True, True]),
        ("s == 'x'", [True, False, None, False]),
        ("1 < a < 4", [False, None, True, False]),
        ("x > 0", [True, True, None, False]),
    ],
)
def test_comparisons(text: str, expected: list[object]) -> None:
    assert run(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # f = [T, null, F, T], g = [null, null, T, F]
        ("f and g", [None, None, False, False]),
        ("f or g", [True, None, True, True]),
        ("not f", [False, None, True, False]),
        ("g and False", [False, False, False, False]),  # null and false is false
        ("g or True", [True, True, True, True]),  # null or true is true
        ("is_null(a) or a >= 2", [False, True, True, True]),
        ("a > 2 and is_null(a)", [False, None, False, False]),
        ("f and g or a == 1", [True, None, False, False]),
    ],
)
def test_kleene_logic(text: str, expected: list[object]) -> None:
    assert run(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # a = [1, null, 3, 4], s = ["x", "Yy", null, "zed"]: a null is unknown, as with ==
        ("a in [1, 4]", [True, None, False, True]),
        ("a in (1, 4)", [True, None, False, True]),
        ("a not in [1, 4]", [False, None, True, False]),
        ("s in ['x', 'zed']", [True, False, None, True]),
        ("a in [-1, 2]", [False, None, False, False]),
        ("a in []", [False, False, False, False]),  # nothing is in an empty list, not even an unknown value
        ("a in [1, None]", [True, None, None, None]),  # as SQL's IN: not found, but maybe the null
        ("a not in [1, None]", [False, None, None, None]),
        ("1 in [1, 2]", [True, True, True, True]),
    ],
)
def test_in_lists(text: str, expected: list[object]) -> None:
    assert run(text) == expected


def test_in_with_null_is_unknown() -> None:
    assert run("a in [1, 4]")[1] is None
    assert run("a not in [1, 4]")[1] is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a + 1", [2, None, 4, 5]),
        ("a - 1", [0, None, 2, 3]),
        ("a * 2", [2, None, 6, 8]),
        ("-a", [-1, None, -3, -4]),
        ("a / 2", [0.5, None, 1.5, 2.0]),
        ("7 / 2", [3.5, 3.5, 3.5, 3.5]),
        ("a / 4 * 4", [1.0, None, 3.0, 4.0]),
        ("x + a", [1.5, None, None, 2.0]),
        ("(a + 1) * 2", [4, None, 8, 10]),
    ],
)
def test_arithmetic(text: str, expected: list[object]) -> None:
    assert run(text) == expected


def test_division_is_true_division_with_float_type() -> None:
    result = compile_expression("a / 2").evaluate(BATCH)
    assert result.type == pa.float64()
    assert result.to_pylist()[0] == 0.5  # not 0 as with integer division


def test_integer_overflow_is_an_expression_error() -> None:
    with pytest.raises(ExpressionError, match="overflow"):
        run("9223372036854775807 + a")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("is_null(a)", [False, True, False, False]),
        ("is_valid(s)", [True, True, False, True]),
        ("lower(s)", ["x", "yy", None, "zed"]),
        ("upper(s)", ["X", "YY", None, "ZED"]),
        ("length(s)", [1, 2, None, 3]),
        ("abs(a - 3)", [2, None, 0, 1]),
        ("round(x)", [0.0, 2.0, None, -2.0]),
        ("floor(x)", [0.0, 1.0, None, -2.0]),
        ("ceil(x)", [1.0, 2.0, None, -2.0]),
        ("coalesce(a, 0)", [1, 0, 3, 4]),
        ("starts_with(s, 'Y')", [False, True, None, False]),
        ("ends_with(s, 'd')", [False, False, None, True]),
        ("contains(s, 'e')", [False, False, None, True]),
        ("to_float(a)", [1.0, None, 3.0, 4.0]),
        ("to_int(x * 2)", [1, 3, None, -4]),
        ("to_string(a)", ["1", None, "3", "4"]),
    ],
)
def test_functions(text: str, expected: list[object]) -> None:
    assert run(text) == expected


def test_constant_expression_is_broadcast_to_every_row() -> None:
    result = compile_expression("True").evaluate(BATCH)
    assert result.to_pylist() == [True] * BATCH.num_rows
    assert result.type == pa.bool_()
    assert run("None") == [None] * BATCH.num_rows


def test_columns_lists_every_name_used() -> None:
    assert compile_expression("a > 1 and lower(s) == 'x' or is_null(g)").columns == {"a", "s", "g"}
    assert compile_expression("1 + 2").columns == frozenset()


def test_unknown_function_names_the_choices() -> None:
    with pytest.raises(ExpressionError) as caught:
        compile_expression("sqrt(a)")
    message = str(caught.value)
    assert "unknown function 'sqrt'" in message
    for name in FUNCTIONS:
        assert repr(name) in message


def test_unknown_column_names_the_available_ones_at_check() -> None:
    expression = compile_expression("b > 1 and a > 1")
    with pytest.raises(ExpressionError) as caught:
        expression.check_columns(["a", "s"])
    message = str(caught.value)
    assert "['b']" in message
    assert "['a', 's']" in message


def test_unknown_column_names_the_available_ones_at_evaluate() -> None:
    with pytest.raises(ExpressionError) as caught:
        run("b > 1")
    message = str(caught.value)
    assert "'b'" in message
    assert "['a', 's', 'f', 'g', 'x']" in message


def test_check_columns_accepts_known_columns() -> None:
    compile_expression("a > 1").check_columns(["a"])  # must not raise
    assert compile_expression("a > 1").columns == {"a"}


@pytest.mark.parametrize("text", ["a ==", "a > > 1", "(a", ""])
def test_syntax_error(text: str) -> None:
    with pytest.raises(ExpressionError, match="is not valid"):
        compile_expression(text)


@pytest.mark.parametrize(
    ("text", "node"),
    [
        ("lambda: 1", "Lambda"),
        ("a ** 2", "Pow"),
        ("a // 2", "FloorDiv"),
        ("a % 2", "Mod"),
        ("a[0]", "Subscript"),
        ("a if f else 2", "IfExp"),
        ("{a}", "Set"),
        ("f'{a}'", "JoinedStr"),
        ("[x for x in a]", "ListComp"),
        ("a & 1", "BitAnd"),
        ("(y := 1)", "NamedExpr"),
        ("a is None", "Is"),
    ],
)
def test_unsupported_syntax_is_rejected_when_compiled(text: str, node: str) -> None:
    with pytest.raises(ExpressionError, match=f"{node} is not supported"):
        compile_expression(text)


@pytest.mark.parametrize(
    "text", ["__import__('os')", "eval('1')", "exec('1')", "open('/etc/passwd')", "getattr(a, 'b')"]
)
def test_builtins_cannot_be_called(text: str) -> None:
    with pytest.raises(ExpressionError, match="unknown function"):
        compile_expression(text)


@pytest.mark.parametrize("text", ["a.b", "a.__class__"])
def test_a_dotted_name_is_a_struct_path_never_a_python_attribute(text: str) -> None:
    """Paths are looked up among a struct's members (test_nested_expressions.py), never with getattr."""
    assert compile_expression(text).columns == {"a"}
    with pytest.raises(ExpressionError, match=r"which is of type int64, not a struct"):
        run(text)


def test_method_call_is_rejected() -> None:
    with pytest.raises(ExpressionError, match=r"unknown function 'a\.b'"):
        compile_expression("a.b()")


def test_keyword_arguments_are_rejected() -> None:
    with pytest.raises(ExpressionError, match="keyword arguments"):
        compile_expression("lower(s=s)")


def test_in_needs_a_list() -> None:
    with pytest.raises(ExpressionError, match="'in' needs a list of constants"):
        run("a in s")


@pytest.mark.parametrize(
    "text",
    [
        "s == 1",  # no kernel for string == int
        "not a",  # invert of an int
        "a in [1, 'x']",  # mixed list
        "to_int('x')",
        "1j",
    ],
)
def test_type_errors_at_evaluation_are_expression_errors(text: str) -> None:
    with pytest.raises(ExpressionError, match="cannot be evaluated"):
        run(text)


@pytest.mark.parametrize("text", ["a in [s]", "a in [1 + 1]"])
def test_in_list_of_non_constants_is_an_expression_error(text: str) -> None:
    with pytest.raises(ExpressionError):
        compile_expression(text).evaluate(BATCH)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a in [s]", "'in' needs a list of constants; 's' is not one"),
        ("a in [1 + 1]", "'in' needs a list of constants; '1 + 1' is not one"),
        ("a in [[1]]", "'in' needs a list of constants; '[1]' is not one"),
        ("a in [1j]", "'in' needs a list of constants; '1j' is not one"),
        ("a in s", "'in' needs a list of constants"),
        ("a in [1] == True", "'in' cannot be chained"),
        ("a in [9223372036854775808]", "does not fit in int64"),
        ("a == [1]", "List is not supported here"),
    ],
)
def test_in_list_is_checked_when_compiled(text: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=re.escape(message)):
        compile_expression(text)


@pytest.mark.parametrize("text", ["lower()", "lower(s, s)", "starts_with(s, s)"])
def test_wrong_function_arguments_are_expression_errors(text: str) -> None:
    with pytest.raises(ExpressionError):
        compile_expression(text).evaluate(BATCH)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("lower()", "lower takes (value), not 0 argument(s)"),
        ("lower(s, s)", "lower takes (value), not 2 argument(s)"),
        ("coalesce()", "coalesce takes (value, ...), not 0 argument(s)"),
        ("starts_with(s)", "starts_with takes (value, string constant), not 1 argument(s)"),
        ("starts_with(s, s)", "argument 2 of starts_with must be a string constant"),
        ("contains(s, 1)", "argument 2 of contains must be a string constant"),
    ],
)
def test_function_arguments_are_checked_when_compiled(text: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=re.escape(message)):
        compile_expression(text)


def test_every_function_declares_its_arguments() -> None:
    for name, function in FUNCTIONS.items():
        assert function.arguments, name
        assert function.signature.startswith("(value"), name


def test_coalesce_takes_any_number_of_arguments() -> None:
    assert run("coalesce(a)") == [1, None, 3, 4]
    assert run("coalesce(a, to_int(x * 2), 0)") == [1, 3, 3, 4]


def test_huge_integer_constant_is_an_expression_error() -> None:
    with pytest.raises(ExpressionError):
        run("a > 100000000000000000000000")


def test_huge_integer_constant_is_rejected_when_compiled() -> None:
    with pytest.raises(ExpressionError, match="100000000000000000000000 does not fit in int64"):
        compile_expression("a > 100000000000000000000000")
    assert run("a < 9223372036854775807") == [True, None, True, True]


def test_evaluation_does_not_modify_the_batch() -> None:
    before = BATCH.to_pylist()
    run("a + 1")
    assert BATCH.to_pylist() == before


def test_result_is_a_plain_array_of_batch_length() -> None:
    result = compile_expression("a > 1").evaluate(BATCH)
    assert isinstance(result, pa.Array)
    assert len(result) == BATCH.num_rows


def test_concat_joins_text_and_is_null_where_any_part_is() -> None:
    assert run('concat("orders.", s)') == ["orders.x", "orders.Yy", None, "orders.zed"]
    assert run('concat(lower(s), "-", s, "!")') == ["x-x!", "yy-Yy!", None, "zed-zed!"]
    with pytest.raises(ExpressionError, match=re.escape("concat takes (value, value, ...), not 1 argument(s)")):
        compile_expression("concat(s)")
