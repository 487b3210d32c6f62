"""Filter translation: hostile strings stay literals, malformed filters are rejected with a clear message."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llama_stack_milvus.vector_io.filters import MAX_DEPTH, parse_filters, to_expression
from llama_stack_milvus.vector_io.schema import DYNAMIC_KEY_PREFIX, DYNAMIC_LAYOUT, JSON_FIELD_LAYOUT

ALLOWED_CONTROL = "\t"
safe_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=40
).filter(lambda s: all(ord(c) >= 0x20 and ord(c) != 0x7F or c in ALLOWED_CONTROL for c in s))
HOSTILE = ['"', "'", "\\", '\\"', '" or 1==1 or "', ") or (1==1", "]", '["', "a\tb", "}", "%", "like"]


def translate_filters(raw, path_of) -> str | None:
    parsed = parse_filters(raw)
    return None if parsed is None else to_expression(parsed, path_of)


def scan(expression: str) -> tuple[list[str], str]:
    """Splits an expression into its string literals (unescaped) and the code outside them."""
    literals, code, i = [], [], 0
    unescape = {"\\": "\\", '"': '"'}
    while i < len(expression):
        if expression[i] != '"':
            code.append(expression[i])
            i += 1
            continue
        i += 1
        text = []
        while expression[i] != '"':
            if expression[i] == "\\":
                i += 1
                text.append(unescape[expression[i]])
            else:
                text.append(expression[i])
            i += 1
        literals.append("".join(text))
        code.append('"_"')
        i += 1
    return literals, "".join(code)


@given(
    key=st.one_of(safe_text.filter(bool), st.sampled_from(HOSTILE)),
    value=st.one_of(safe_text, st.sampled_from(HOSTILE)),
)
def test_keys_and_values_become_exact_literals(key: str, value: str) -> None:
    literals, code = scan(translate_filters({"type": "eq", "key": key, "value": value}, DYNAMIC_LAYOUT.path))
    assert literals == [DYNAMIC_KEY_PREFIX + key, value]
    assert code == '($meta["_"] == "_")'
    literals, code = scan(translate_filters({"type": "eq", "key": key, "value": value}, JSON_FIELD_LAYOUT.path))
    assert literals == [key, value]
    assert code == '(attributes["_"] == "_")'


filter_leaf = st.builds(
    lambda op, key, value: {"type": op, "key": key, "value": value},
    st.sampled_from(["eq", "ne", "gt", "gte", "lt", "lte"]),
    st.sampled_from(["a", 'k"ey', "x) or (1==1"]),
    st.one_of(st.integers(-(10**9), 10**9), st.floats(allow_nan=False, allow_infinity=False), safe_text),
)
filter_tree = st.recursive(
    filter_leaf,
    lambda children: st.builds(
        lambda kind, items: {"type": kind, "filters": items},
        st.sampled_from(["and", "or"]),
        st.lists(children, min_size=1, max_size=3),
    ),
    max_leaves=8,
)


def count_leaves(node: dict) -> int:
    return sum(count_leaves(child) for child in node["filters"]) if "filters" in node else 1


@given(filter_tree)
def test_structure_comes_only_from_the_filter_tree(tree: dict) -> None:
    _, code = scan(translate_filters(tree, DYNAMIC_LAYOUT.path))
    comparisons = sum(code.count(op) for op in ("==", "!=", ">=", "<=")) + code.count(" > ") + code.count(" < ")
    assert comparisons == count_leaves(tree)
    assert code.count("(") == code.count(")")


@pytest.mark.parametrize(
    ("bad_filter", "message"),
    [
        ({"type": "like", "key": "a", "value": "x"}, "Invalid filter type"),
        ({"type": "gt", "key": "a", "value": True}, "'gt' on key 'a' needs a number or string"),
        ({"type": "eq", "key": "a", "value": [1]}, "'eq' on key 'a' needs a string, number or boolean"),
        ({"type": "eq", "key": "a", "value": None}, "got null"),
        ({"type": "in", "key": "a", "value": []}, "'in' on key 'a' needs a non-empty list"),
        ({"type": "nin", "key": "a", "value": "x"}, "'nin' on key 'a' needs a non-empty list"),
        ({"type": "eq", "key": "", "value": "x"}, "'key' must be a non-empty string"),
        ({"type": "and", "filters": []}, "'and' needs at least one filter"),
        ({"type": "eq", "key": "a", "value": float("inf")}, "finite number"),
        ({"type": "eq", "key": "a", "value": "bell\x07"}, "control character"),
        ({"type": "eq", "key": "a", "value": "two\nlines"}, "control character"),
        ({"type": "eq", "key": "a"}, "must have 'key' and 'value'"),
    ],
)
def test_malformed_filters_name_the_problem(bad_filter: dict, message: str) -> None:
    with pytest.raises(ValueError, match="Invalid filters") as raised:
        translate_filters(bad_filter, DYNAMIC_LAYOUT.path)
    assert message in str(raised.value)


def test_nesting_deeper_than_the_limit_is_rejected() -> None:
    tree: dict = {"type": "eq", "key": "a", "value": 1}
    for _ in range(MAX_DEPTH):
        tree = {"type": "and", "filters": [tree]}
    with pytest.raises(ValueError, match=f"deeper than {MAX_DEPTH}"):
        translate_filters(tree, DYNAMIC_LAYOUT.path)


def test_no_filter_means_no_expression() -> None:
    assert translate_filters(None, DYNAMIC_LAYOUT.path) is None
    assert translate_filters({}, DYNAMIC_LAYOUT.path) is None
