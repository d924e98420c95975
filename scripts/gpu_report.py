"""The measured GPU report of scripts/gpu-check, also runnable on cpu.

Starts a real daemon, loads the default MiniLM and a random-weight open_clip model on
the device, embeds text and images, reads /device/cuda and /v1/devices, ejects and
checks the memory came back (torch allocator and NVML), runs the budget eviction path,
and measures embedding throughput through the daemon against in-process encode.

    python scripts/gpu_report.py --device cuda      # on a GPU machine
    python scripts/gpu_report.py --device cpu       # the same flow, cpu figures only

Exits non-zero if any check fails; prints one line per figure.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from modelctl.client import Client, image_data_uri
from modelctl.errors import ApiError
from modelctl.testing import (
    MINILM,
    Daemon,
    cosine,
    free_port,
    make_tiny_clip,
    minilm_path,
    png_bytes,
    wide_clip_config,
)

FAILURES: list[str] = []


def check(ok: bool, what: str) -> None:
    print(f"  [{'ok' if ok else 'FAIL'}] {what}")
    if not ok:
        FAILURES.append(what)


def device_figures(client: Client, device: str) -> dict[str, Any]:
    """torch allocator and NVML figures of ``device`` as the daemon reports them."""
    report = client.devices()
    if device == "cpu":
        return {"torch_allocated": None, "memory_used": report["cpu"]["process_rss"]}
    index = int(device.split(":")[1]) if ":" in device else 0
    return next(d for d in report["cuda"] if d["index"] == index)


def section_load_eject(d: Daemon, device: str, clip_props: dict[str, Any],
                       image: Path) -> None:
    c = d.client
    print(f"\n== load, embed, eject on {device}")
    before = device_figures(c, device)
    entry = c.load_model(MINILM, device)
    alias = "cuda:0" if device == "cuda" else device
    again = c.load_model(MINILM, alias)
    check(again["loaded_at"] == entry["loaded_at"] and len(c.list_models()) == 1,
          f"{device} and {alias} are one entry")
    clip = c.load_model("gpu-clip", device, properties=clip_props)
    after = device_figures(c, device)
    for e in (entry, clip):
        print(f"  {e['name']}: bytes={e['bytes']} device_bytes={e['device_bytes']} "
              f"load_seconds={e['load_seconds']}")
    texts = ["a red square", "the weather is nice today"]
    vectors = c.embed(MINILM, texts, device=device)
    check([len(v) for v in vectors] == [384, 384], "MiniLM text embeddings are 384-dim")
    from sentence_transformers import SentenceTransformer

    reference = SentenceTransformer(minilm_path(), device="cpu").encode(texts)
    check(min(cosine(a, b) for a, b in zip(vectors, reference, strict=True)) > 0.999,
          "MiniLM on the daemon's device matches in-process cpu encode (cosine > 0.999)")
    clip_vectors = c.embed("gpu-clip", [texts[0], image_data_uri(image)], device=device)
    check([len(v) for v in clip_vectors] == [clip["dimensions"]] * 2,
          "CLIP text and image embeddings have the model's dimensions")
    if device != "cpu":
        marqo = c.get_cuda_info()
        print(f"  GET /device/cuda: {marqo}")
        check(bool(marqo["cuda_devices"]), "/device/cuda lists the GPU")
    print(f"  /v1/devices before load: {_mem(before)}")
    print(f"  /v1/devices after load:  {_mem(after)}")
    ejected = c.eject(all=True)
    final = device_figures(c, device)
    print(f"  /v1/devices after eject: {_mem(final)}")
    for row in ejected["ejected"]:
        print(f"  ejected {row['name']}: bytes_freed={row['bytes_freed']} "
              f"device_bytes_freed={row['device_bytes_freed']} rss_freed={row['rss_freed']}")
    if device != "cpu":
        check(final["torch_allocated"] == before["torch_allocated"],
              f"torch.cuda.memory_allocated back to its pre-load value "
              f"({before['torch_allocated']} -> {after['torch_allocated']} -> "
              f"{final['torch_allocated']})")
        device_bytes = sum(e["device_bytes"] or 0 for e in (entry, clip))
        dropped = after["memory_used"] - final["memory_used"]
        check(dropped >= 0.9 * device_bytes,
              f"NVML used memory dropped by {dropped} bytes, >= 90% of device_bytes "
              f"{device_bytes}")
    check(c.list_models() == [], "cache empty after eject")


def _mem(fig: dict[str, Any]) -> str:
    return f"torch_allocated={fig.get('torch_allocated')} memory_used={fig.get('memory_used')}"


def section_budget(probe: Daemon, device: str, props: dict[str, Any]) -> None:
    print(f"\n== budget eviction on {device}")
    # The model's size, measured by a load on the daemon already running.
    size_entry = probe.client.load_model("budget-a", device, properties=props)
    probe.client.eject("budget-a", device)
    size = size_entry["device_bytes"] if device != "cpu" else size_entry["bytes"]
    var = "MODELCTL_MAX_CPU_MEMORY" if device == "cpu" else "MODELCTL_MAX_CUDA_MEMORY"
    with Daemon(env={var: str(int(size * 2.5))}) as d:
        c = d.client
        c.load_model("budget-a", device, properties=props)
        c.load_model("budget-b", device, properties=props)
        c.embed("budget-a", ["touch a so b is least recently used"], device=device)
        c.load_model("budget-c", device, properties=props)
        names = sorted(m["name"] for m in c.list_models())
        check(names == ["budget-a", "budget-c"],
              f"budget of 2.5 models: loading a third evicted the LRU one ({names})")
        c.update_model("budget-a", device, pin=True)
        c.update_model("budget-c", device, pin=True)
        try:
            c.load_model("budget-d", device, properties=props)
            check(False, "409 when only pinned models hold the budget")
        except ApiError as exc:
            check(exc.status == 409 and "budget-a" in exc.message,
                  f"409 naming the holders: {exc.message[:120]}")


def section_throughput(d: Daemon, device: str, seconds: float) -> None:
    from sentence_transformers import SentenceTransformer

    print(f"\n== embedding throughput on {device} (daemon vs in-process)")
    sentences = [f"sentence {i}: the quick brown fox jumps over the lazy dog {i % 7} times"
                 for i in range(2048)]
    model = SentenceTransformer(minilm_path(), device=device)
    model.encode(sentences[:64])
    start = time.perf_counter()
    done = 0
    while time.perf_counter() - start < seconds:
        model.encode(sentences[:512], batch_size=32)
        done += 512
    ceiling = done / (time.perf_counter() - start)
    del model
    d.client.load_model(MINILM, device)
    d.client.embed(MINILM, sentences[:64], device=device)

    def run(clients: int, per_request: int) -> float:
        count = [0]
        lock = threading.Lock()
        stop = time.perf_counter() + seconds

        def worker(offset: int) -> None:
            client = Client(socket_path=d.socket_path)
            i = offset
            while time.perf_counter() < stop:
                batch = [sentences[(i + k) % len(sentences)] for k in range(per_request)]
                client.embed(MINILM, batch, device=device)
                i += per_request
                with lock:
                    count[0] += per_request
            client.close()

        threads = [threading.Thread(target=worker, args=(n * 64,)) for n in range(clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return count[0] / (time.perf_counter() - t0)

    concurrent = run(32, 1)
    batched = run(1, 64)
    print(f"  in-process encode(batch_size=32): {ceiling:.0f} sentences/s")
    print(f"  32 concurrent clients x 1 sentence: {concurrent:.0f}/s = "
          f"{concurrent / ceiling:.2f}x")
    print(f"  1 client x 64 sentences: {batched:.0f}/s = {batched / ceiling:.2f}x")
    d.client.eject(all=True)


def section_fp16(d: Daemon, device: str, clip_props: dict[str, Any], image: Path) -> None:
    """Marqo's fp16 names on cuda: sentence-transformers and open_clip in half precision."""
    c = d.client
    print(f"\n== fp16 on {device}")
    texts = ["a red square", "the weather is nice today"]
    fp32 = c.load_model(MINILM, device)
    reference = c.embed(MINILM, texts, device=device, precision="fp32")
    half = c.load_model(MINILM, device, precision="fp16")
    vectors = c.embed(MINILM, texts, device=device, precision="fp16")
    worst = min(cosine(a, b) for a, b in zip(vectors, reference, strict=True))
    print(f"  MiniLM fp32 {fp32['bytes']} bytes, fp16 {half['bytes']} bytes; accuracy on "
          f"load {half['accuracy']}; worst cosine to fp32 {worst:.5f}")
    check(half["bytes"] < 0.6 * fp32["bytes"], "MiniLM fp16 holds about half fp32's bytes")
    check(worst >= 0.999, "MiniLM fp16 vectors within cosine 0.999 of fp32")
    clip = c.load_model("gpu-half-clip", device, properties=clip_props, precision="fp16")
    rows = c.embed("gpu-half-clip", [texts[0], image_data_uri(image)], device=device)
    print(f"  open_clip fp16: accuracy on load {clip['accuracy']}")
    check([len(r) for r in rows] == [clip["dimensions"]] * 2
          and clip["accuracy"]["min_cosine"] >= 0.99,
          "open_clip fp16 embeds text and images, within cosine 0.99 of fp32")
    c.eject(all=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--seconds", type=float, default=8.0, help="per throughput run")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--small", action="store_true",
                        help="a smaller eviction model (for a quick run of the flow on cpu)")
    args = parser.parse_args()
    device = args.device
    work = Path(tempfile.mkdtemp(prefix="mc-gpu-"))
    clip_props = make_tiny_clip(work / "small", arch="gpu-tiny-clip")
    width, layers = (256, 2) if args.small else (768, 6)
    big_props = make_tiny_clip(work / "wide", arch="gpu-wide-clip",
                               config=wide_clip_config(width=width, layers=layers))
    image = work / "red.png"
    image.write_bytes(png_bytes())
    started = time.perf_counter()
    with Daemon(http_port=free_port()) as d:
        health = d.client.health()
        print(f"modelctl {health['version']} daemon pid {health['pid']} on {device}")
        section_load_eject(d, device, clip_props, image)
        if device != "cpu":
            section_fp16(d, device, clip_props, image)
        if not args.skip_throughput:
            section_throughput(d, device, args.seconds)
        section_budget(d, device, big_props)
    print(f"\n{len(FAILURES)} failed checks; {time.perf_counter() - started:.0f}s")
    for failure in FAILURES:
        print(f"  FAILED: {failure}")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
