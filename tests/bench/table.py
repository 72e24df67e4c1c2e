#!/usr/bin/env python3
"""Folds the rows of tests/bench/peers.sh into one table: tests/bench/table.py OUT_DIR.

Reads OUT_DIR/rows.jsonl (our rows, one JSON object a line), OUT_DIR/machine.json, and the Zigbee rows
of tests/bench/z2m.sh from the file OUT_DIR/zigbee.json names (or the reason they are missing), and
writes OUT_DIR/peers.md and OUT_DIR/peers.json.

A row: {"group", "row", "ours", "peer", "peer_name", "unit", "goal", "better": "higher"|"lower"}, plus
optionally "note" (how it was measured) and "limit" (what limits it, measured; printed under the table
when the goal is missed). "ours"/"peer" may be null (not measured, or no peer). "goal" is text:
"≥ 2× peer" / "≤ 1/8 of peer" (a ratio ours/peer) or "≤ 10 MB" / "≥ 2000/s" (our figure alone); empty
for rows kept for comparison only.
"""
import json
import math
import re
import sys
from pathlib import Path


def number(text):
    text = text.strip()
    m = re.fullmatch(r"(\d+(?:[.,]\d+)*)\s*/\s*(\d+(?:\.\d+)?)", text)
    if m:
        return float(m.group(1).replace(",", "")) / float(m.group(2))
    return float(text.replace(",", ""))


def parse_goal(goal):
    """(kind, op, value): kind 'ratio' or 'ours', op '>=' or '<='; None when there is no goal."""
    if not goal:
        return None
    g = goal.replace("at least", "≥").replace("at most", "≤").replace(">=", "≥").replace("<=", "≤")
    m = re.search(r"([≥≤])\s*([\d.,]+(?:\s*/\s*[\d.]+)?)\s*(×|x\b|times)?\s*(.*)", g)
    if not m:
        return None
    op = ">=" if m.group(1) == "≥" else "<="
    try:
        value = number(m.group(2))
    except ValueError:
        return None
    rest = m.group(4).lower()
    is_ratio = bool(m.group(3)) or "peer" in rest or "of " in rest and "mb" not in rest and "mib" not in rest
    return ("ratio" if is_ratio else "ours", op, value)


def fmt(v):
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    a = abs(v)
    if a >= 100_000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:,.0f}"
    if a >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def evaluate(row):
    ours, peer = row.get("ours"), row.get("peer")
    ratio = None
    if isinstance(ours, (int, float)) and isinstance(peer, (int, float)) and peer:
        ratio = ours / peer
    goal = parse_goal(row.get("goal"))
    met = None
    if goal and isinstance(ours, (int, float)):
        kind, op, value = goal
        x = ratio if kind == "ratio" else ours
        if x is not None and not (isinstance(x, float) and math.isnan(x)):
            met = x >= value if op == ">=" else x <= value
    return ratio, met


def load_rows(path):
    text = Path(path).read_text()
    try:
        data = json.loads(text)
        return data if isinstance(data, list) else data.get("rows", [data])
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]


def main():
    out = Path(sys.argv[1])
    machine = json.loads((out / "machine.json").read_text())
    rows = load_rows(out / "rows.jsonl")
    zig = json.loads((out / "zigbee.json").read_text())
    zigbee_rows = []
    if zig.get("file"):
        try:
            zigbee_rows = load_rows(zig["file"])
        except (OSError, json.JSONDecodeError) as e:
            zig["status"] = f"its rows could not be read from {zig['file']}: {e}"
    for r in zigbee_rows:
        r.setdefault("group", "Zigbee (tests/bench/z2m.sh)")
        r["source"] = "tests/bench/z2m.sh"
    everything = zigbee_rows + rows
    table = []
    for r in everything:
        ratio, met = evaluate(r)
        table.append({**r, "ratio": ratio, "met": met})

    md = ["# Side-by-side benchmarks (tests/bench/peers.sh)", ""]
    md.append(
        f"Machine: {machine['cpu']}, {machine['cores']} cores, Linux {machine['kernel']}; "
        f"run {machine['started']} to {machine['finished']} (local time); load average at the start "
        f"{machine['load']}. {machine.get('shared', '')}".rstrip()
    )
    md.append("")
    if not zigbee_rows:
        md.append(f"**Zigbee rows not run**: {zig.get('status', 'tests/bench/z2m.sh did not run')}.")
        md.append("")
    md.append("| group | row | ours | peer | ours/peer | goal | met |")
    md.append("|---|---|---|---|---|---|---|")
    for r in table:
        unit = r.get("unit") or ""
        peer = "—" if r.get("peer") is None else f"{fmt(r['peer'])} ({r.get('peer_name') or 'peer'})"
        ours = fmt(r.get("ours"))
        met = {True: "yes", False: "**no**", None: "—"}[r["met"]]
        ratio = "—" if r["ratio"] is None else f"{r['ratio']:.2f}×"
        md.append(
            f"| {r.get('group', '')} | {r.get('row', '')} ({unit}) | {ours} | {peer} | {ratio} | "
            f"{r.get('goal') or '—'} | {met} |"
        )
    def section(title, lines):
        if lines:
            md.extend(["", title, ""] + lines)

    section("What limits each missed goal (measured in this run):", [
        f"- **{r.get('row')}**: {r.get('limit') or 'no profile was recorded for this row'}"
        for r in table if r["met"] is False
    ])
    section("How each row was measured:", [
        f"- {r.get('row')}: {r['note']}" for r in table if r.get("note")
    ])
    (out / "peers.md").write_text("\n".join(md) + "\n")
    (out / "peers.json").write_text(json.dumps({
        "machine": machine,
        "zigbee": zig if not zigbee_rows else {"status": "run", "file": zig.get("file")},
        "rows": table,
    }, indent=1, ensure_ascii=False) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
