"""The peer of `aura-bench image`: stable-diffusion.cpp (through stable-diffusion-cpp-python)
measured as aura-bench measures Aura: load the checkpoint, then one text-to-image request
with the same prompt, size, steps, sampler (Euler ancestral) and guidance.

Reads one JSON object from argv[1]:
  {"model", "size", "steps", "threads", "prompt", "negative", "cfg", "seed", "wtype"}
Prints one JSON object: load_s, step_s and step_cpu_s (medians over the steps, timed
between stable-diffusion.cpp's end-of-step callbacks, as Aura's are), image_s and
image_cpu_s (the whole request), png_sha256; and `peak_rss=<bytes>` on stderr.
"""
import hashlib
import io
import json
import resource
import sys
import time

from stable_diffusion_cpp import StableDiffusion

cfg = json.loads(sys.argv[1])
t0 = time.perf_counter()
sd = StableDiffusion(
    model_path=cfg["model"],
    n_threads=cfg["threads"],
    wtype=cfg["wtype"],
    vae_decode_only=True,
    verbose=False,
)
load_s = time.perf_counter() - t0

marks = []


def progress(step, total, seconds):
    # Called at the end of every sampling step (and of other phases, with other totals).
    if total == cfg["steps"]:
        marks.append((time.perf_counter(), time.process_time()))


t0, c0 = time.perf_counter(), time.process_time()
images = sd.generate_image(
    prompt=cfg["prompt"],
    negative_prompt=cfg["negative"],
    width=cfg["size"],
    height=cfg["size"],
    cfg_scale=cfg["cfg"],
    sample_method="euler_a",
    sample_steps=cfg["steps"],
    seed=cfg["seed"],
    progress_callback=progress,
)
image_s, image_cpu_s = time.perf_counter() - t0, time.process_time() - c0
buf = io.BytesIO()
images[0].save(buf, format="PNG")
# As for Aura: a step runs from the previous step's end; the first (which also holds the
# text encoding) is left out when there are more.
points = [(t0, c0)] + marks
per = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(points, points[1:])]
if len(per) > 1:
    per = per[1:]


def median(v):
    v = sorted(v)
    return v[len(v) // 2] if v else 0.0


print(
    json.dumps(
        {
            "load_s": load_s,
            "step_s": median([p[0] for p in per]),
            "image_s": image_s,
            "step_cpu_s": median([p[1] for p in per]),
            "image_cpu_s": image_cpu_s,
            "png_sha256": hashlib.sha256(buf.getvalue()).hexdigest(),
        }
    )
)
print(f"peak_rss={resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}", file=sys.stderr)
