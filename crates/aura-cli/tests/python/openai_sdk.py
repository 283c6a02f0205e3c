"""Drives a running `aura serve` with the official `openai` Python package.

Run by crates/aura-cli/tests/openai_sdk.rs with AURA_BASE_URL (the node's /v1 URL),
AURA_API_KEY, AURA_CHAT_MODEL and AURA_EMBED_MODEL set. Every check asserts on what the
SDK parsed, so a response the SDK cannot read fails here. Prints one JSON line of facts
(receipt ids among them) for the Rust side to check against the ledger.
"""

import base64
import json
import os
import struct
import sys

import openai

base_url = os.environ["AURA_BASE_URL"]
chat_model = os.environ["AURA_CHAT_MODEL"]
embed_model = os.environ["AURA_EMBED_MODEL"]
client = openai.OpenAI(base_url=base_url, api_key=os.environ["AURA_API_KEY"], max_retries=0)
facts = {"receipts": []}


def receipt_of(raw):
    rid = raw.headers.get("x-aura-receipt")
    assert rid and rid.startswith("rcpt_"), f"no receipt header: {dict(raw.headers)}"
    facts["receipts"].append(rid)
    return rid


# Models: both packages are listed, with their kinds.
models = {m.id: m for m in client.models.list()}
assert chat_model in models and embed_model in models, models
assert models[chat_model].object == "model"
assert client.models.retrieve(chat_model).id == chat_model

# Chat, not streamed: deterministic (greedy by default), usage reported, receipt named.
question = [{"role": "user", "content": "Name a colour of the sky."}]
raw = client.chat.completions.with_raw_response.create(model=chat_model, messages=question, max_tokens=12)
first = raw.parse()
rid = receipt_of(raw)
assert first.id == f"chatcmpl-{rid}", (first.id, rid)
assert first.choices[0].message.role == "assistant"
assert first.choices[0].message.content, first
assert first.choices[0].finish_reason in ("stop", "length")
assert first.usage.completion_tokens > 0 and first.usage.prompt_tokens > 0
assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
again = client.chat.completions.with_raw_response.create(model=chat_model, messages=question, max_tokens=12)
receipt_of(again)
assert again.parse().choices[0].message.content == first.choices[0].message.content
facts["chat"] = first.choices[0].message.content

# Chat, streamed: the deltas add up to the same text; usage in the final chunk.
with client.chat.completions.with_streaming_response.create(
    model=chat_model, messages=question, max_tokens=12, stream=True,
    stream_options={"include_usage": True},
) as response:
    receipt_of(response)
    text, usage, finish = "", None, None
    for chunk in response.parse():
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            text += choice.delta.content or ""
            finish = choice.finish_reason or finish
assert text == first.choices[0].message.content, (text, first.choices[0].message.content)
assert usage is not None and usage.completion_tokens == first.usage.completion_tokens, usage
assert finish == first.choices[0].finish_reason

# Log-probabilities: one entry per generated token, with alternatives.
lp = client.chat.completions.with_raw_response.create(
    model=chat_model, messages=question, max_tokens=5, logprobs=True, top_logprobs=3)
receipt_of(lp)
content = lp.parse().choices[0].logprobs.content
assert 0 < len(content) <= 5 and all(len(t.top_logprobs) == 3 for t in content), content
assert all(t.logprob <= 0 for t in content)

# Tool calls: a required call names the offered tool with arguments that parse.
tools = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}]
raw = client.chat.completions.with_raw_response.create(
    model=chat_model, tools=tools, tool_choice="required",
    messages=[{"role": "user", "content": "What is the weather in Paris?"}])
receipt_of(raw)
call = raw.parse().choices[0]
assert call.finish_reason == "tool_calls", call
assert call.message.tool_calls[0].function.name == "get_weather"
arguments = json.loads(call.message.tool_calls[0].function.arguments)
assert isinstance(arguments.get("city"), str), arguments
facts["tool_arguments"] = arguments

# The call's result goes back as a tool message; the model answers in text.
raw = client.chat.completions.with_raw_response.create(
    model=chat_model, tools=tools, max_tokens=20,
    messages=[
        {"role": "user", "content": "What is the weather in Paris?"},
        {"role": "assistant", "tool_calls": [call.message.tool_calls[0].model_dump()]},
        {"role": "tool", "tool_call_id": call.message.tool_calls[0].id, "content": "sunny, 21 C"},
    ])
receipt_of(raw)
assert raw.parse().choices[0].message is not None

# Structured output: json_schema and json_object answers parse.
schema = {
    "type": "object",
    "properties": {"colour": {"type": "string"}, "certain": {"type": "boolean"}},
    "required": ["colour", "certain"],
    "additionalProperties": False,
}
raw = client.chat.completions.with_raw_response.create(
    model=chat_model, messages=question, max_tokens=40,
    response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}})
receipt_of(raw)
answer = json.loads(raw.parse().choices[0].message.content)
assert set(answer) == {"colour", "certain"}, answer
assert isinstance(answer["colour"], str) and isinstance(answer["certain"], bool), answer
facts["json_schema"] = answer
# A schema the decoder cannot enforce is refused, never answered unconstrained.
unenforceable = {"type": "object", "properties": {"n": {"type": "number", "multipleOf": 3}}}
error = None
try:
    client.chat.completions.create(
        model=chat_model, messages=question,
        response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": unenforceable}})
except openai.BadRequestError as e:
    error = e
assert error is not None and "multipleOf" in str(error), error
raw = client.chat.completions.with_raw_response.create(
    model=chat_model, max_tokens=80, response_format={"type": "json_object"},
    messages=[{"role": "user", "content": "Give me a JSON object describing a cat with name and age."}])
receipt_of(raw)
choice = raw.parse().choices[0]
facts["json_object"] = choice.message.content
assert choice.finish_reason == "stop", choice
assert isinstance(json.loads(facts["json_object"]), dict)

# Completions, streamed and not, agree.
raw = client.completions.with_raw_response.create(model=chat_model, prompt="The sky is", max_tokens=6)
receipt_of(raw)
completion = raw.parse()
assert completion.choices[0].text and completion.usage.completion_tokens > 0
streamed = ""
with client.completions.with_streaming_response.create(
        model=chat_model, prompt="The sky is", max_tokens=6, stream=True) as response:
    receipt_of(response)
    for chunk in response.parse():
        streamed += "".join(c.text for c in chunk.choices)
assert streamed == completion.choices[0].text, (streamed, completion.choices[0].text)

# Embeddings: unit vectors, as floats and as the SDK's default base64.
raw = client.embeddings.with_raw_response.create(model=embed_model, input=["the sky is blue", "the sea is blue"])
receipt_of(raw)
vectors = [d.embedding for d in raw.parse().data]
assert len(vectors) == 2 and len(vectors[0]) == 384
assert abs(sum(x * x for x in vectors[0]) - 1.0) < 1e-3
raw = client.embeddings.with_raw_response.create(
    model=embed_model, input="the sky is blue", encoding_format="float")
receipt_of(raw)
assert max(abs(a - b) for a, b in zip(raw.parse().data[0].embedding, vectors[0])) < 1e-6

# Errors surface as the SDK's exception types.
def raises(kind, call):
    try:
        call()
    except kind as e:
        return e
    raise AssertionError(f"expected {kind.__name__}")

raises(openai.NotFoundError, lambda: client.chat.completions.create(
    model="no-such-model", messages=question))
raises(openai.BadRequestError, lambda: client.chat.completions.create(
    model=chat_model, messages=[]))
raises(openai.BadRequestError, lambda: client.chat.completions.create(
    model=chat_model, messages=question, n=2))
raises(openai.BadRequestError, lambda: client.embeddings.create(model=chat_model, input="x"))
raises(openai.AuthenticationError, lambda: openai.OpenAI(
    base_url=base_url, api_key="aura_wrong_key", max_retries=0).models.list())

print(json.dumps(facts))
