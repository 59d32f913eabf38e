from __future__ import annotations

from bem.kit.canonical import canonical_json, content_hash, normalize


def test_canonical_json_sorts_keys_and_has_no_whitespace() -> None:
    assert canonical_json(normalize({"b": 1, "a": [1, {"d": 2, "c": 3}]})) == (
        b'{"a":[1,{"c":3,"d":2}],"b":1}'
    )


def test_numbers_are_normalized() -> None:
    assert normalize({"x": 5.0, "y": -0.0, "z": 1.5, "t": True}) == {
        "x": 5,
        "y": 0,
        "z": 1.5,
        "t": True,
    }
    assert isinstance(normalize(5.0), int)
    assert isinstance(normalize(1e300), float)  # beyond exact integers: left as is


def test_equal_documents_hash_equal_whatever_their_key_order() -> None:
    a = normalize({"name": "W", "quantities": {"Q": {"Length": 5.0, "Area": 2}}})
    b = normalize({"quantities": {"Q": {"Area": 2.0, "Length": 5}}, "name": "W"})
    assert content_hash(a) == content_hash(b)
    assert content_hash(a) != content_hash(normalize({"name": "W2"}))
    assert len(content_hash(a)) == 64
