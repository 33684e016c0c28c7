"""Input schema with stated coercions; rendered examples against the chat format checks."""
import json

import pytest

from webtune.errors import WebtuneError
from webtune.prepare.validate import InputSchema, Invalid, check_chat, coerce

SCHEMA = {"type": "object", "required": ["title", "description"],
          "properties": {"title": {"type": "string"}, "description": {"type": "string"},
                         "final_price": {"type": ["number", "null"]}, "rating": {"type": ["number", "null"]},
                         "reviews_count": {"type": "integer"}, "features": {"type": ["array", "null"]},
                         "sku": {"type": "string"}, "prime": {"type": "boolean"}}}


@pytest.fixture
def schema(tmp_path):
    path = tmp_path / "input.schema.json"
    path.write_text(json.dumps(SCHEMA))
    return InputSchema(path)


def test_valid_record_needs_no_repair(schema):
    fields = {"title": "t", "description": "d", "final_price": 9.5}
    assert schema.validate(fields) == [] and fields["final_price"] == 9.5


def test_stated_coercions_are_applied_and_named(schema):
    fields = {"title": "t", "description": "d", "final_price": "N/A", "rating": "4.5 out of 5 stars",
              "reviews_count": "1,204", "features": "one long string", "sku": 12345, "prime": "yes"}
    repairs = schema.validate(fields)
    assert sorted(repairs) == ["coerced:features", "coerced:final_price", "coerced:prime", "coerced:rating",
                               "coerced:reviews_count", "coerced:sku"]
    assert fields == {"title": "t", "description": "d", "final_price": None, "rating": 4.5, "reviews_count": 1204,
                      "features": ["one long string"], "sku": "12345", "prime": True}


def test_uncoercible_record_is_rejected_naming_the_field(schema):
    with pytest.raises(Invalid) as e:
        schema.validate({"title": "t", "description": {"text": "x", "lang": "en"}})
    assert e.value.reason == "schema_invalid"
    assert "'description'" in e.value.detail and "input.schema.json" in e.value.detail
    with pytest.raises(Invalid, match="'title' is a required property"):
        schema.validate({"description": "d"})


def test_coerce_refuses_what_is_not_stated():
    with pytest.raises(ValueError):
        coerce("N/A", {"type": "number"})  # null not allowed: no silent zero
    assert coerce("$1,299.99", {"type": "number"}) == 1299.99


def test_broken_schema_file_is_one_clear_error(tmp_path):
    bad = tmp_path / "bad.schema.json"
    bad.write_text("{not json")
    with pytest.raises(WebtuneError, match="bad.schema.json"):
        InputSchema(bad)
    bad.write_text(json.dumps({"type": "no-such-type"}))
    with pytest.raises(WebtuneError, match="not a valid JSON Schema"):
        InputSchema(bad)


GOOD_CHAT = [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]


@pytest.mark.parametrize("messages, reason", [
    ([], "chat_format:missing_messages_list"),
    (["not a dict"], "chat_format:message_missing_key"),   # the cookbook: `"role" in message` fails
    ([{"role": "user"}], "chat_format:message_missing_key"),
    ([{"role": "user", "content": "u", "extra": 1}], "chat_format:message_unrecognized_key"),
    ([{"role": "robot", "content": "u"}], "chat_format:unrecognized_role"),
    ([{"role": "user", "content": "u"}, {"role": "assistant", "content": ""}], "chat_format:missing_content"),
    ([{"role": "user", "content": "u"}], "chat_format:example_missing_assistant_message"),
])
def test_chat_checks_name_the_cookbook_class(messages, reason):
    with pytest.raises(Invalid) as e:
        check_chat(messages)
    assert e.value.reason == reason
    check_chat(GOOD_CHAT)


@pytest.mark.parametrize("messages", [
    GOOD_CHAT, [], [{"role": "user", "content": "u"}], [{"role": "assistant", "content": "a", "weight": 2}],
    [{"role": "assistant", "content": "a", "name": 3}], [{"role": "assistant", "content": "a", "name": "bot"}],
    [{"role": "user", "content": "u"}, {"role": "assistant", "content": 5}],
])
def test_hand_written_checks_agree_with_the_chat_schema(messages):
    import jsonschema

    from webtune.prepare.validate import CHAT_SCHEMA
    try:
        check_chat(messages)
        passed = True
    except Invalid as e:
        passed = False
        assert e.reason.startswith("chat_format:") and e.detail
    assert passed == jsonschema.Draft202012Validator(CHAT_SCHEMA).is_valid({"messages": messages})
