"""What inline::llama-cpp changes in a chat request before llama.cpp's server sees it."""

from llama_stack_api import OpenAIChatCompletionRequestWithExtraBody

from llama_stack_milvus.inference.adapter import flatten_text_parts, json_schema_as_json_object, name_the_only_tool

TOOL = {"type": "function", "function": {"name": "knowledge_search", "parameters": {"type": "object"}}}


def request(messages, tools=None, tool_choice=None) -> OpenAIChatCompletionRequestWithExtraBody:
    return OpenAIChatCompletionRequestWithExtraBody(model="m", messages=messages, tools=tools, tool_choice=tool_choice)


def test_tool_results_sent_as_text_parts_become_one_string():
    params = request(
        [
            {"role": "user", "content": "q"},
            {
                "role": "tool",
                "tool_call_id": "call_1",
                "content": [{"type": "text", "text": "found 2 chunks:\n"}, {"type": "text", "text": "chunk one"}],
            },
        ]
    )
    flattened = [flatten_text_parts(message) for message in params.messages]
    assert flattened[0].content == "q"
    assert flattened[1].content == "found 2 chunks:\nchunk one"
    assert flattened[1].tool_call_id == "call_1"


def test_a_single_tool_is_named_on_the_users_turn_only():
    first = name_the_only_tool(request([{"role": "user", "content": "q"}], tools=[TOOL], tool_choice="auto"))
    assert first.tool_choice == {"type": "function", "function": {"name": "knowledge_search"}}
    after_result = request(
        [{"role": "user", "content": "q"}, {"role": "tool", "tool_call_id": "c", "content": "r"}],
        tools=[TOOL],
        tool_choice="auto",
    )
    assert name_the_only_tool(after_result).tool_choice == "auto"


def test_an_explicit_choice_or_several_tools_are_left_alone():
    other = dict(TOOL, function={"name": "other", "parameters": {"type": "object"}})
    two = request([{"role": "user", "content": "q"}], tools=[TOOL, other], tool_choice="auto")
    assert name_the_only_tool(two).tool_choice == "auto"
    none = request([{"role": "user", "content": "q"}], tools=[TOOL], tool_choice="none")
    assert name_the_only_tool(none).tool_choice == "none"


def test_control_characters_in_tool_arguments_become_spaces():
    import json

    from openai.types.chat import ChatCompletionChunk

    from llama_stack_milvus.inference.adapter import clean_tool_arguments

    raw_arguments = '{"query": "a\nb\tc"}'  # a raw newline and tab inside the JSON string, as SmolLM2 writes
    chunk = ChatCompletionChunk.model_validate(
        {
            "id": "c",
            "object": "chat.completion.chunk",
            "created": 0,
            "model": "m",
            "choices": [
                {
                    "index": 0,
                    "delta": {
                        "tool_calls": [
                            {"index": 0, "function": {"name": "knowledge_search", "arguments": raw_arguments}}
                        ]
                    },
                }
            ],
        }
    )
    clean_tool_arguments(chunk)
    arguments = chunk.choices[0].delta.tool_calls[0].function.arguments
    assert json.loads(arguments) == {"query": "a b c"}


def test_the_named_tools_string_arguments_are_bounded():
    tool = {
        "type": "function",
        "function": {
            "name": "knowledge_search",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}, "mode": {"type": "string", "enum": ["a", "b"]}},
            },
        },
    }
    named = name_the_only_tool(request([{"role": "user", "content": "q"}], tools=[tool], tool_choice="auto"))
    properties = named.tools[0]["function"]["parameters"]["properties"]
    assert properties["query"] == {"type": "string", "maxLength": 300}
    assert "maxLength" not in properties["mode"]
    assert tool["function"]["parameters"]["properties"]["query"] == {"type": "string"}  # the caller's is untouched


def test_a_tool_already_named_is_bounded_too():
    named = {"type": "function", "function": {"name": "knowledge_search"}}
    schema = {"type": "object", "properties": {"query": {"type": "string"}}}
    tool = {"type": "function", "function": {"name": "knowledge_search", "parameters": schema}}
    params = name_the_only_tool(request([{"role": "user", "content": "q"}], tools=[tool], tool_choice=named))
    assert params.tool_choice == named
    assert params.tools[0]["function"]["parameters"]["properties"]["query"]["maxLength"] == 300


def test_a_json_schema_response_format_is_sent_as_llama_cpps_json_object_with_the_schema():
    schema = {"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]}
    params = OpenAIChatCompletionRequestWithExtraBody(
        model="m",
        messages=[{"role": "user", "content": "q"}],
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema, "strict": True}},
    )
    assert json_schema_as_json_object(params).response_format == {"type": "json_object", "schema": schema}
    plain = request([{"role": "user", "content": "q"}])
    assert json_schema_as_json_object(plain) is plain
