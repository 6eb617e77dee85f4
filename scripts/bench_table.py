#!/usr/bin/env python3
"""Render a Gear.Bench JSON result as a Markdown table: scripts/bench_table.py FILE [COLUMN ...]."""
import json
import sys

doc = json.load(open(sys.argv[1]))
rows = doc["rows"]
cols = sys.argv[2:] or list(rows[0].keys())


def fmt(v):
    if isinstance(v, float):
        return f"{v:.4f}" if abs(v) < 10 else f"{v:.2f}"
    if isinstance(v, list):
        return " ".join(fmt(x) for x in v)
    if isinstance(v, int) and abs(v) >= 100000:
        return f"{v:,}"
    return str(v)


print(f"*{doc['command']} — {doc['model']} — {doc['machine']} — {doc['date']}*\n")
print("| " + " | ".join(cols) + " |")
print("|" + "|".join("---" for _ in cols) + "|")
for r in rows:
    print("| " + " | ".join(fmt(r.get(c, "")) for c in cols) + " |")
