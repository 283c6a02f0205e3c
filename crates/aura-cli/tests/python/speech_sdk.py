"""Drives a running `aura serve`'s /v1/audio/speech with the official `openai` Python package.

Run by crates/aura-cli/tests/speech.rs with AURA_BASE_URL (the node's /v1 URL) and
AURA_API_KEY set. Every check asserts on what the SDK returned, so an answer the SDK cannot
read fails here. Prints one JSON line of facts for the Rust side.
"""

import base64
import json
import os
import struct

import openai

client = openai.OpenAI(base_url=os.environ["AURA_BASE_URL"], api_key=os.environ["AURA_API_KEY"], max_retries=0)
text = "Hello from Aura. Every mission is governed, signed, and replayable."
facts = {}


def read_wav(data):
    """The sample rate and sample count of a 16-bit mono WAV; its stated data size."""
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE", data[:16]
    assert data[12:16] == b"fmt ", data[12:16]
    tag, channels, rate = struct.unpack("<HHI", data[20:28])
    bits = struct.unpack("<H", data[34:36])[0]
    assert (tag, channels, bits) == (1, 1, 16), (tag, channels, bits)
    assert data[36:40] == b"data"
    stated = struct.unpack("<I", data[40:44])[0]
    return rate, (len(data) - 44) // 2, stated


# The SDK's plain call: a WAV.
wav = client.audio.speech.create(model="tts-1", voice="alloy", input=text, response_format="wav").content
rate, samples, stated = read_wav(wav)
assert rate == 22050, rate
seconds = samples / rate
assert 2.0 < seconds < 10.0, seconds
facts["wav_seconds"] = round(seconds, 3)

# Streamed through the SDK's streaming response: the same bytes.
with client.audio.speech.with_streaming_response.create(
    model="tts-1", voice="alloy", input=text, response_format="wav"
) as streamed:
    assert streamed.headers["content-type"] == "audio/wav"
    assert b"".join(streamed.iter_bytes()) == wav

# Raw PCM is OpenAI's: 24 kHz, 16-bit little-endian mono.
pcm = client.audio.speech.create(model="tts-1", voice="alloy", input=text, response_format="pcm").content
assert abs(len(pcm) / 2 / 24000 - seconds) < 0.01, (len(pcm), seconds)

# Every voice speaks (OpenAI's and Aura's own).
for voice in ["ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse", "aura"]:
    v = client.audio.speech.create(model="tts-1", voice=voice, input="Hi.", response_format="wav", speed=1.5).content
    assert read_wav(v)[1] > 1000, voice

# Aura's extension through extra_body: the audio and its viseme timeline.
answer = json.loads(
    client.audio.speech.create(
        model="tts-1", voice="aura", input=text, response_format="wav", extra_body={"aura_visemes": True}
    ).content
)
audio = base64.b64decode(answer["audio_b64"])
rate, samples, stated = read_wav(audio)
assert stated == samples * 2, (stated, samples)
audio_ms = samples * 1000 / rate
cues = answer["visemes"]
assert cues[0] == {"t_ms": 0, "viseme": "sil", "weight": 1.0}, cues[0]
assert cues[-1]["viseme"] == "sil"
assert all(a["t_ms"] < b["t_ms"] for a, b in zip(cues, cues[1:]))
timeline_ms = cues[-1]["t_ms"]
# The bound: the timeline's length within 5 % of the audio's.
assert abs(timeline_ms - audio_ms) <= 0.05 * audio_ms, (timeline_ms, audio_ms)
assert abs(answer["duration_ms"] - audio_ms) <= 1, (answer["duration_ms"], audio_ms)
facts["timeline_ms"] = timeline_ms
facts["audio_ms"] = round(audio_ms, 1)
facts["cues"] = len(cues)

# Refusals are OpenAI errors the SDK raises as such, naming the field.
refused = []
for bad, field in [
    ({"voice": "nobody"}, "voice"),
    ({"input": ""}, "input"),
    ({"input": "x" * 4097}, "input"),
    ({"response_format": "mp3"}, "response_format"),
    ({"speed": 9.0}, "speed"),
]:
    params = {"model": "tts-1", "voice": "alloy", "input": "hi", "response_format": "wav"}
    params.update(bad)
    try:
        client.audio.speech.create(**params)
    except openai.BadRequestError as e:
        assert e.status_code == 400
        assert e.body["type"] == "invalid_request_error", e.body
        assert e.body["message"].startswith(field + ":"), e.body
        refused.append(field)
    else:
        raise AssertionError(f"{bad} was accepted")
facts["refused"] = refused

print(json.dumps(facts))
