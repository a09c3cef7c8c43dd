#!/usr/bin/env python3
"""Tables and SVG plots of bench/run_sweep.sh's results (one bench --json --profile object per line).
usage: sweep_plot.py sweep.jsonl out-dir"""
import json, sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
out = sys.argv[2]
precision = rows[0].get("precision", "f32") if rows else "f32"

def attention_shares(r):
    """(time share of the attention core, its share of the FLOPs the causal kernel computes)."""
    prof = r.get("profile_seconds_per_step", {})
    core = prof.get("attention core forward", 0) + prof.get("attention core backward", 0)
    L = 4  # gpt-bench's layers
    T, C = r["seq"], r["hidden"]
    attn = 6.0 * L * T * C  # per token: 12 L T C counts the full T x T products; causal computes half
    total = 6.0 * r["parameters"] + attn
    return core / r["step_seconds"], attn / total

def mfu(r):
    """MFU against the peak of the run's precision (bf16 runs: the bf16 peak)."""
    return r["mfu_bf16"] if r.get("mfu_bf16") else r["mfu"]

def table(kind, key, label):
    print(f"\n| {label} | batch | tokens/s | MFU (of its precision's peak) | peak RSS/rank | activations/layer/rank (measured, formula) | attention time share | attention FLOP share |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        if r["sweep"] != kind: continue
        t, f = attention_shares(r)
        print(f"| {r[key]} | {r['batch']} | {r['tokens_per_s']:.0f} | {100 * mfu(r):.1f}% | {r['peak_rss_mb']:.0f} MB | "
              f"{r['activation_bytes_per_layer'] / 1e6:.1f} MB, {r['activation_bytes_per_layer_formula'] / 1e6:.1f} MB | "
              f"{100 * t:.1f}% | {100 * f:.1f}% |")

def svg(path, title, xlabel, xs, series, log2x=True):
    """series: [(name, color, ys, axis)] with axis 'left' or 'right' (each axis scaled to its own max)."""
    import math
    W, H, l, r_, t, b = 640, 360, 70, 70, 40, 50
    fx = (lambda x: math.log2(x)) if log2x else (lambda x: x)
    x0, x1 = fx(min(xs)), fx(max(xs))
    px = lambda x: l + (fx(x) - x0) / ((x1 - x0) or 1) * (W - l - r_)
    tops = {}
    for _, _, ys, axis in series: tops[axis] = max(tops.get(axis, 0), max(ys) * 1.1 or 1)
    py = lambda y, axis: H - b - y / tops[axis] * (H - t - b)
    e = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
         f'<rect width="{W}" height="{H}" fill="white"/>', f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
         f'<line x1="{l}" y1="{H - b}" x2="{W - r_}" y2="{H - b}" stroke="black"/>',
         f'<line x1="{l}" y1="{t}" x2="{l}" y2="{H - b}" stroke="black"/>',
         f'<line x1="{W - r_}" y1="{t}" x2="{W - r_}" y2="{H - b}" stroke="black"/>',
         f'<text x="{W / 2}" y="{H - 10}" text-anchor="middle">{xlabel}</text>']
    for x in xs:
        e.append(f'<text x="{px(x):.1f}" y="{H - b + 16}" text-anchor="middle">{x}</text>')
    for axis, xpos, anchor in (("left", l - 6, "end"), ("right", W - r_ + 6, "start")):
        if axis not in tops: continue
        for k in range(5):
            v = tops[axis] * k / 4
            e.append(f'<text x="{xpos}" y="{py(v, axis) + 4:.1f}" text-anchor="{anchor}">{v:.3g}</text>')
    for i, (name, color, ys, axis) in enumerate(series):
        pts = " ".join(f"{px(x):.1f},{py(y, axis):.1f}" for x, y in zip(xs, ys))
        e.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
        e += [f'<circle cx="{px(x):.1f}" cy="{py(y, axis):.1f}" r="3" fill="{color}"/>' for x, y in zip(xs, ys)]
        e.append(f'<text x="{l + 10}" y="{t + 14 + 16 * i}" fill="{color}">{name} ({axis} axis)</text>')
    e.append("</svg>")
    open(path, "w").write("\n".join(e) + "\n")

table("seq", "seq", "sequence")
table("width", "hidden", "width")
seq = [r for r in rows if r["sweep"] == "seq"]
if len(seq) > 1:
    xs = [r["seq"] for r in seq]
    svg(f"{out}/sweep_seq.svg", f"{precision} TP=2, 4096 tokens per step: cost as the sequence grows", "sequence length", xs,
        [("tokens/s", "#1f77b4", [r["tokens_per_s"] for r in seq], "left"),
         ("peak RSS per rank, MB", "#2ca02c", [r["peak_rss_mb"] for r in seq], "right"),
         ("attention time share x 1000", "#d62728", [1000 * attention_shares(r)[0] for r in seq], "left"),
         ("attention FLOP share x 1000", "#ff7f0e", [1000 * attention_shares(r)[1] for r in seq], "left")])
width = [r for r in rows if r["sweep"] == "width"]
if len(width) > 1:
    xs = [r["hidden"] for r in width]
    svg(f"{out}/sweep_width.svg", f"{precision} TP=2, 2048 tokens per step: cost as the width grows", "hidden size", xs,
        [("tokens/s", "#1f77b4", [r["tokens_per_s"] for r in width], "left"),
         ("MFU x 1000", "#9467bd", [1000 * mfu(r) for r in width], "left"),
         ("peak RSS per rank, MB", "#2ca02c", [r["peak_rss_mb"] for r in width], "right")], log2x=False)
print(f"\nplots: {out}/sweep_seq.svg, {out}/sweep_width.svg")
