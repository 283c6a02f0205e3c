"""Drives a running `aura serve`'s Images API with the official `openai` Python package.

Run by crates/aura-cli/tests/images.rs with AURA_BASE_URL (the node's /v1 URL),
AURA_API_KEY and AURA_MODEL (an installed tiny image model) set. Every check asserts on
what the SDK returned, so an answer the SDK cannot read fails here. Prints one JSON line
of facts for the Rust side.
"""

import base64
import json
import os
import struct

import openai

client = openai.OpenAI(base_url=os.environ["AURA_BASE_URL"], api_key=os.environ["AURA_API_KEY"], max_retries=0)
model = os.environ["AURA_MODEL"]
facts = {}
aura = {"seed": 7, "steps": 3, "guidance_scale": 5.0, "negative_prompt": "blurry"}


def chunks(png):
    """The PNG's chunks as (type, data)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", png[:8]
    at, out = 8, []
    while at < len(png):
        (n,) = struct.unpack(">I", png[at : at + 4])
        out.append((png[at + 4 : at + 8], png[at + 8 : at + 8 + n]))
        at += 12 + n
    return out


def bare(png):
    """The image without Aura's provenance chunk (which names each image's own receipt)."""
    return [c for c in chunks(png) if not (c[0] == b"iTXt" and c[1].startswith(b"aura\0"))]


def provenance(png):
    for kind, data in chunks(png):
        if kind == b"iTXt" and data.startswith(b"aura\0"):
            return json.loads(data[len(b"aura\0\0\0\0\0") :])
    raise AssertionError("no aura chunk")


# The plain call: b64_json, with Aura's fields through extra_body.
r = client.images.generate(model=model, prompt="a red fox", size="64x64", response_format="b64_json", extra_body=aura)
assert len(r.data) == 1
png = base64.b64decode(r.data[0].b64_json)
ihdr = dict(chunks(png))[b"IHDR"]
assert struct.unpack(">II", ihdr[:8]) == (64, 64)
assert r.usage.output_tokens == 3 and r.usage.total_tokens == r.usage.input_tokens + 3, r.usage
assert r.size == "64x64" and r.output_format == "png"
meta = provenance(png)
assert meta["parameters"]["seed"] == 7 and meta["parameters"]["steps"] == 3, meta
facts["receipt"] = meta["receipt"]
facts["parameters"] = meta["parameters"]
facts["png_b64"] = r.data[0].b64_json

# The same seed again: the same image (its own receipt).
again = base64.b64decode(client.images.generate(model=model, prompt="a red fox", size="64x64", extra_body=aura).data[0].b64_json)
assert bare(again) == bare(png)
assert provenance(again)["receipt"] != meta["receipt"]
other = base64.b64decode(
    client.images.generate(model=model, prompt="a red fox", size="64x64", extra_body={**aura, "seed": 8}).data[0].b64_json
)
assert bare(other) != bare(png)

# Two images: consecutive seeds.
two = client.images.generate(model=model, prompt="a red fox", size="64x64", n=2, extra_body={**aura, "seed": 6})
assert len(two.data) == 2
assert bare(base64.b64decode(two.data[1].b64_json)) == bare(png)

# Streamed, with partial images, then the completed image: the same image.
stream = client.images.generate(
    model=model, prompt="a red fox", size="64x64", stream=True, partial_images=2, extra_body={**aura, "steps": 4}
)
events = list(stream)
kinds = [e.type for e in events]
assert kinds == ["image_generation.partial_image"] * 2 + ["image_generation.completed"], kinds
assert [e.partial_image_index for e in events[:2]] == [0, 1]
for e in events[:2]:
    preview = base64.b64decode(e.b64_json)
    assert struct.unpack(">II", dict(chunks(preview))[b"IHDR"][:8]) == (8, 8)
done = events[-1]
assert done.usage.output_tokens == 4, done.usage
streamed = base64.b64decode(done.b64_json)
plain4 = base64.b64decode(client.images.generate(model=model, prompt="a red fox", size="64x64", extra_body={**aura, "steps": 4}).data[0].b64_json)
assert bare(streamed) == bare(plain4)
facts["streamed"] = kinds

# An edit (image-to-image) through the SDK's multipart form.
edit = client.images.edit(
    model=model,
    image=("start.png", png, "image/png"),
    prompt="a red fox in the snow",
    size="64x64",
    extra_body={"strength": 0.5, "steps": 4, "seed": 1},
)
edited = provenance(base64.b64decode(edit.data[0].b64_json))["parameters"]
assert edited["strength"] == 0.5 and len(edited["init_image_sha256"]) == 64, edited
assert edit.usage.output_tokens == 2, edit.usage

# JPEG and lossless WebP, each carrying its receipt id and parameters like the PNG's
# chunk (a JPEG comment segment; WebP's XMP chunk): handed to the Rust side to check.
jpeg = client.images.generate(model=model, prompt="a red fox", size="64x64", output_format="jpeg", output_compression=80, extra_body=aura)
assert jpeg.output_format == "jpeg", jpeg.output_format
facts["jpeg_b64"] = jpeg.data[0].b64_json
webp = client.images.generate(model=model, prompt="a red fox", size="64x64", output_format="webp", extra_body=aura)
assert webp.output_format == "webp", webp.output_format
facts["webp_b64"] = webp.data[0].b64_json

# Refusals are OpenAI errors the SDK raises as such.
refused = []
for call, exc, code in [
    (lambda: client.images.generate(model=model, prompt="x", size="100x64"), openai.BadRequestError, "invalid_request"),
    (lambda: client.images.generate(model=model, prompt="x", size="64x64", n=11), openai.BadRequestError, "invalid_request"),
    (lambda: client.images.generate(model=model, prompt="x" * 4001, size="64x64"), openai.BadRequestError, "invalid_request"),
    (lambda: client.images.generate(model="no-such-model", prompt="x", size="64x64"), openai.NotFoundError, "model_not_found"),
    (lambda: client.images.generate(model="unlicensed", prompt="x", size="64x64"), openai.PermissionDeniedError, None),
    (lambda: client.images.generate(model=model, prompt="x", response_format="url"), openai.BadRequestError, "invalid_request"),
    (lambda: client.images.generate(model=model, prompt="x", output_format="gif"), openai.BadRequestError, "invalid_request"),
    (lambda: client.images.generate(model=model, prompt="x", output_format="webp", output_compression=50), openai.BadRequestError, "invalid_request"),
]:
    try:
        call()
    except exc as e:
        assert e.body is not None and e.body.get("message"), e.body
        if code:
            assert e.body["code"] == code, e.body
        refused.append(e.body["message"].split(":")[0])
    else:
        raise AssertionError("not refused")
facts["refused"] = refused
print(json.dumps(facts))
