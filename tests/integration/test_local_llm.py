"""milvus-embedded with no key: retrieval and generation by the real SmolLM2 on llama.cpp, started by the stack."""

from pathlib import Path

import pytest
from llama_stack_client import LlamaStackClient

from llama_stack_milvus.cli.ingest import ingest
from llama_stack_milvus.cli.query import ask_agent, ask_rag
from llama_stack_milvus.vector_io.quote import best_quote

pytestmark = pytest.mark.server

CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus"
TUTORIAL = CORPUS / "python-tutorial-rst"
MODEL = "llama-cpp/smollm2-135m-instruct"


@pytest.fixture(scope="module")
def client(rag_server) -> LlamaStackClient:
    return LlamaStackClient(base_url=rag_server.base_url, timeout=300)


@pytest.fixture(scope="module")
def tutorial_store(client) -> str:
    report = ingest(client, "python-tutorial", [str(TUTORIAL)], progress=False)
    assert not report.errors and len(report.ingested) == 4, report
    return next(store.id for store in client.vector_stores.list() if store.name == "python-tutorial")


def test_the_local_model_is_listed_as_a_chat_model(client):
    models = {model.id: model.model_type for model in client.models.list()}
    assert models.get(MODEL) == "llm", models


@pytest.mark.parametrize(
    ("question", "document", "expected"),
    [
        ("What is the name of the module used to create virtual environments?", "venv.rst", "venv"),
        ("What is the name of the language named after?", "appetite.rst", "Monty Python"),
    ],
)
def test_answers_a_question_about_ingested_documents(client, tutorial_store, question, document, expected):
    answer = ask_rag(client, tutorial_store, question, MODEL, top_k=2)
    assert Path(answer.sources[0].source).name == document
    assert expected in answer.text, answer.text


def test_responses_file_search_calls_the_tool_and_finds_the_right_document(client, tutorial_store):
    answer = ask_agent(client, tutorial_store, "How do I create a virtual environment with venv?", MODEL, top_k=3)
    assert answer.sources, "no file_search_call results: the model answered without searching"
    assert Path(answer.sources[0].source).name == "venv.rst", [source.source for source in answer.sources]
    assert answer.sources[0].quote and answer.sources[0].quote in answer.sources[0].text  # what `ask` prints under it
    assert answer.text.strip()


def test_file_search_is_called_even_when_the_client_leaves_the_choice_to_the_model(rag_server, tutorial_store):
    """OpenAI SDK, tool_choice left at "auto": inline::llama-cpp names the only tool on the user's turn."""
    from openai import OpenAI

    openai = OpenAI(base_url=f"{rag_server.base_url}/v1", api_key="none", timeout=300)
    response = openai.responses.create(
        model=MODEL,
        input="Why is 0.1 + 0.2 not exactly 0.3 in floating point?",
        tools=[{"type": "file_search", "vector_store_ids": [tutorial_store], "max_num_results": 3}],
        include=["file_search_call.results"],
    )
    calls = [item for item in response.output if item.type == "file_search_call"]
    assert calls, [item.type for item in response.output]
    # Llama Stack 0.7.3 puts the file id in `filename`; the attributes hold the name and our `source`.
    attributes = [result.attributes or {} for call in calls for result in call.results or []]
    assert attributes and Path(str(attributes[0].get("source"))).name == "floatingpoint.rst", attributes


def test_file_search_results_and_their_citations_carry_quotes(rag_server, client, tutorial_store):
    """Each file_search result quotes its best sentence for the model's query, at offsets into the result's text; a
    file_citation annotation quotes its file's best-scored result. The stack makes annotations from <|file-id|>
    markers in the model's answer, which SmolLM2 does not write on its own: a JSON schema (text.format, a grammar in
    llama.cpp) makes it write one, and the rest is the stack's and ours."""
    from openai import OpenAI

    venv = next(file.id for file in client.files.list() if file.filename.endswith("venv.rst"))
    answer = {"type": "string", "enum": [f"Use the venv module <|{venv}|>."]}
    schema = {"type": "object", "properties": {"answer": answer}, "required": ["answer"]}
    openai = OpenAI(base_url=f"{rag_server.base_url}/v1", api_key="none", timeout=300)
    response = openai.responses.create(
        model=MODEL,
        input="How do I create a virtual environment with venv?",
        tools=[{"type": "file_search", "vector_store_ids": [tutorial_store], "max_num_results": 3}],
        tool_choice={"type": "file_search"},
        include=["file_search_call.results"],
        text={"format": {"type": "json_schema", "name": "cited", "schema": schema, "strict": True}},
        temperature=0.0,
    )
    for shown in (response, openai.responses.retrieve(response.id)):  # as answered, and as stored
        calls = [item for item in shown.output if item.type == "file_search_call"]
        assert calls and calls[0].results, [item.type for item in shown.output]
        query = calls[0].queries[0]
        best_by_file: dict[str, tuple[float, str]] = {}
        for result in calls[0].results:
            quote = result.quote
            span = best_quote(result.text, query)
            assert (quote["start"], quote["end"]) == span if quote else span is None, (query, result.text, quote)
            if quote:
                assert result.text[quote["start"] : quote["end"]] == quote["text"]
                if result.file_id not in best_by_file or result.score > best_by_file[result.file_id][0]:
                    best_by_file[result.file_id] = (result.score, quote["text"])
        assert venv in best_by_file, "venv.rst's results share words with the query"
        annotations = [
            annotation
            for item in shown.output
            if item.type == "message"
            for part in item.content
            for annotation in part.annotations or []
        ]
        assert [(a.type, a.file_id) for a in annotations] == [("file_citation", venv)], shown.output_text
        assert annotations[0].quote == best_by_file[venv][1]
