#!/usr/bin/env python3
"""The hottest lines of an `ncu --page source --csv` export (SASS or CUDA source view): the
rows with the most warp stall samples, each with its share and the stall columns that
dominate it. Usage: ncu_top.py FILE.csv [N]"""
import csv
import sys


def num(s):
    try:
        return float(str(s).replace(",", ""))
    except ValueError:
        return 0.0


def main():
    path, top = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 30
    rows = list(csv.reader(open(path, errors="replace")))
    head = next((i for i, r in enumerate(rows) if any("Sampling" in c for c in r)), None)
    if head is None:
        print(f"{path}: no stall-sampling column; first lines:")
        for r in rows[:5]:
            print(r[:12])
        return
    cols = rows[head]
    body = [r for r in rows[head + 1:] if len(r) == len(cols)]
    sampling = [i for i, c in enumerate(cols) if "Sampling" in c]
    total_col = next((i for i in sampling if "All" in cols[i] and "Not" not in cols[i]), sampling[0])
    text_col = next((i for i, c in enumerate(cols) if c in ("Source", "# Source")), 1)
    stall_cols = [i for i, c in enumerate(cols) if c.startswith("stall_") or "Stall" in c and i != total_col]
    total = sum(num(r[total_col]) for r in body) or 1.0
    print(f"{path}: {len(body)} lines, {total:.0f} samples ({cols[total_col]})")
    for r in sorted(body, key=lambda r: -num(r[total_col]))[:top]:
        s = num(r[total_col])
        parts = sorted(((num(r[i]), cols[i]) for i in stall_cols), reverse=True)[:3]
        why = ", ".join(f"{c} {v / max(s, 1):.0%}" for v, c in parts if v > 0)
        print(f"{s / total:6.1%} {r[0][-5:]:>5} {r[text_col].strip()[:90]}  [{why}]")


main()
