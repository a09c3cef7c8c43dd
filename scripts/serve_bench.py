#!/usr/bin/env python3
"""Load a running `tensorpar serve` with C concurrent streaming clients for a while and print
throughput (generated tokens/s over the run) and time to first token (p50/p99), one JSON line.

  scripts/serve_bench.py --port 8000 --clients 4 --seconds 20 --prompt-tokens 32 --max-tokens 64
"""
import argparse, http.client, json, threading, time


def one_request(port, prompt, max_tokens):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    body = json.dumps({"prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "stream": True})
    t0 = time.perf_counter()
    conn.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    resp = conn.getresponse()
    first, tokens, buf = None, 0, b""
    while True:
        chunk = resp.read1(65536) if hasattr(resp, "read1") else resp.read(1)
        if not chunk:
            break
        buf += chunk
        while b"\n\n" in buf:
            event, buf = buf.split(b"\n\n", 1)
            if not event.startswith(b"data: ") or event == b"data: [DONE]":
                continue
            n = len(json.loads(event[6:])["choices"][0]["token_ids"])
            if n and first is None:
                first = time.perf_counter() - t0
            tokens += n
    conn.close()
    return first, tokens


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--prompt-tokens", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=64)
    a = ap.parse_args()
    stop_at = time.perf_counter() + a.seconds
    ttft, totals, lock = [], [0, 0], threading.Lock()

    def client(c):
        i = 0
        while time.perf_counter() < stop_at:
            prompt = [(c * 31 + i * 7 + k) % 200 + 32 for k in range(a.prompt_tokens)]  # distinct prompts
            first, tokens = one_request(a.port, prompt, a.max_tokens)
            with lock:
                ttft.append(first)
                totals[0] += tokens
                totals[1] += 1
            i += 1

    t0 = time.perf_counter()
    threads = [threading.Thread(target=client, args=(c,)) for c in range(a.clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    ttft.sort()
    q = lambda p: ttft[min(len(ttft) - 1, int(p * len(ttft)))]
    print(json.dumps({"clients": a.clients, "requests": totals[1], "tokens": totals[0],
                      "tokens_per_s": round(totals[0] / wall, 1), "ttft_p50_ms": round(1000 * q(0.5), 1),
                      "ttft_p99_ms": round(1000 * q(0.99), 1)}))


if __name__ == "__main__":
    main()
