"""Chart of bench/results/results.csv: ours vs rsyslog per scenario (events/s, CPU per event,
peak PSS, p99 latency), with the generator's and the sink's ceilings for reference.

usage: chart.py results.csv chart.png
"""
import csv
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

OURS, REF = "sekoia-forwarder", "rsyslog"


def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def main(src, dst):
    rows = list(csv.DictReader(open(src, newline="")))
    ceilings = [r for r in rows if r["scenario"].startswith("ceiling")]
    scen = []
    for r in rows:
        if r["target"] in (OURS, REF) and r["scenario"] not in scen:
            scen.append(r["scenario"])
    get = {(r["scenario"], r["target"]): r for r in rows}

    panels = [
        ("events_per_s", "events/s end to end (log)", True),
        ("cpu_us_per_event", "forwarder CPU µs per event (log)", True),
        ("peak_pss_mib", "peak PSS, MiB (sum of Pss over the process tree, sampled every 50 ms; "
         "shared ring pages counted once)", False),
        ("p99_ms", "p99 latency send→sink, ms (log)", True),
    ]
    fig, axes = plt.subplots(4, 1, figsize=(12, 15))
    x = range(len(scen))
    w = 0.38
    for ax, (field, title, log) in zip(axes, panels):
        present = [num(r[field]) for r in rows if r["target"] in (OURS, REF) and num(r[field])]
        floor = min(present) * 0.5 if present and log else 0
        for off, target, color in ((-w / 2, OURS, "#1f77b4"), (w / 2, REF, "#d62728")):
            vals, notes = [], []
            for s in scen:
                r = get.get((s, target))
                v = num(r[field]) if r else None
                vals.append(v or 0)
                if r is None:
                    notes.append("not run")
                elif r["status"] != "ok":
                    notes.append("FAILED")
                elif field == "events_per_s" and v is None and num(r["loss_pct"]):
                    notes.append(f"loss {float(r['loss_pct']):.1f} %")
                elif v is None:
                    notes.append("n/a")
                else:
                    notes.append("")
            bars = ax.bar([i + off for i in x], vals, w, label=target, color=color)
            for b, v, n in zip(bars, vals, notes):
                label = n or (f"{v:,.0f}" if v >= 100 else f"{v:.2f}")
                ax.annotate(label, (b.get_x() + b.get_width() / 2, max(b.get_height(), floor)),
                            ha="center", va="bottom", fontsize=7, rotation=0)
        if field == "events_per_s":
            for r in ceilings:
                v = num(r["events_per_s"])
                if v:
                    ax.axhline(v, ls="--", lw=0.8, color="grey")
                    ax.text(len(scen) - 0.5, v, f"{r['target']} {r['size']} B: {v:,.0f}/s",
                            fontsize=7, ha="right", va="bottom", color="grey")
        ax.set_title(title)
        ax.set_xticks(list(x))
        ax.set_xticklabels(scen, fontsize=8)
        if log:
            ax.set_yscale("log")
            if floor:
                # Room for the labels of runs without a value (failed, lost events, not
                # run), drawn at `floor`: log axes otherwise start above it and hide them.
                ax.set_ylim(bottom=floor * 0.7)
        ax.grid(axis="y", alpha=0.3)
    # One legend for all panels, above them, where it hides no bar label.
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper right", ncol=2, fontsize=9)
    fig.suptitle("sekoia-forwarder vs rsyslog (reference image config), same load, same TLS sink")
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(dst, dpi=90)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
