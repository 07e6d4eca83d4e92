"""A picture of the results: each candidate's time relative to the hand-written limit, per function and task."""
from __future__ import annotations


def plot(result: dict, path: str) -> None:
    """Write a horizontal bar chart (log scale: time / limit time) of ``result`` to ``path`` (needs matplotlib)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in result["rows"] if r.get("ratio_limit")]
    groups = list(dict.fromkeys((r["function"], r["task"]) for r in rows))
    names = list(dict.fromkeys(r["candidate"] for r in rows))
    height = 0.8 / max(1, len(names))
    fig, ax = plt.subplots(figsize=(9, 0.5 + 0.35 * len(groups) * max(1, len(names)) * 0.6))
    for k, name in enumerate(names):
        ys, xs = [], []
        for g, (fn, task) in enumerate(groups):
            hit = [r for r in rows if (r["function"], r["task"], r["candidate"]) == (fn, task, name)]
            if hit:
                ys.append(g + k * height)
                xs.append(hit[0]["ratio_limit"])
        ax.barh(ys, xs, height=height, label=name)
    ax.set_yticks([g + 0.4 - height / 2 for g in range(len(groups))])
    ax.set_yticklabels([f"{fn} {task}" for fn, task in groups])
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xlabel("median time / hand-written limit (lower is faster)")
    ax.legend(fontsize="small", loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
