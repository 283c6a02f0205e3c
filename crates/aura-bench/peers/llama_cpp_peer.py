"""The peer of `aura-bench infer`: llama.cpp (through llama-cpp-python's low-level C API,
so Python adds one foreign call per step) measured exactly as aura-bench measures Aura.

Reads one JSON object from argv[1]:
  {"model": path, "threads": n, "prefill": [ids], "chat": [ids], "decode": n, "repeats": n}
Prints one JSON object: prefill_tok_s, ttft_ms, decode_tok_s (medians over the repeats)
and the greedy tokens it decoded.
"""
import ctypes
import json
import statistics
import sys
import time

import llama_cpp as L
import numpy as np

cfg = json.loads(sys.argv[1])
L.llama_backend_init()
mparams = L.llama_model_default_params()
model = L.llama_model_load_from_file(cfg["model"].encode(), mparams)
if not model:
    sys.exit("llama.cpp could not load " + cfg["model"])
n_vocab = L.llama_vocab_n_tokens(L.llama_model_get_vocab(model))
cparams = L.llama_context_default_params()
cparams.n_ctx = 1024
cparams.n_batch = 512
cparams.n_ubatch = 512
cparams.n_threads = cfg["threads"]
cparams.n_threads_batch = cfg["threads"]
ctx = L.llama_init_from_model(model, cparams)
mem = L.llama_get_memory(ctx)


def feed(ids):
    arr = (L.llama_token * len(ids))(*ids)
    rc = L.llama_decode(ctx, L.llama_batch_get_one(arr, len(ids)))
    if rc != 0:
        sys.exit(f"llama_decode failed: {rc}")


def argmax():
    ptr = L.llama_get_logits_ith(ctx, -1)
    return int(np.argmax(np.ctypeslib.as_array(ptr, shape=(n_vocab,))))


prefill, ttft, decode = [], [], []
prefill_cpu, decode_cpu = [], []
tokens = []
for _ in range(cfg["repeats"]):
    L.llama_memory_clear(mem, True)
    t0, c0 = time.perf_counter(), time.process_time()
    feed(cfg["prefill"])
    argmax()
    prefill.append(len(cfg["prefill"]) / (time.perf_counter() - t0))
    prefill_cpu.append(len(cfg["prefill"]) / (time.process_time() - c0))

    L.llama_memory_clear(mem, True)
    t0 = time.perf_counter()
    feed(cfg["chat"])
    tok = argmax()
    ttft.append((time.perf_counter() - t0) * 1000.0)
    tokens = [tok]
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(cfg["decode"]):
        feed([tok])
        tok = argmax()
        tokens.append(tok)
    decode.append(cfg["decode"] / (time.perf_counter() - t0))
    decode_cpu.append(cfg["decode"] / (time.process_time() - c0))

print(json.dumps({
    "prefill_tok_s": statistics.median(prefill),
    "ttft_ms": statistics.median(ttft),
    "decode_tok_s": statistics.median(decode),
    "prefill_tok_cpu_s": statistics.median(prefill_cpu),
    "decode_tok_cpu_s": statistics.median(decode_cpu),
    "tokens": tokens,
    "noise": {"prefill": [min(prefill), max(prefill)], "decode": [min(decode), max(decode)]},
}))
L.llama_free(ctx)
L.llama_model_free(model)
