"""PNG plots of a results directory (matplotlib; optional, see requirements-bench.lock).

Everything is drawn from ``results.json`` and the telemetry JSON lines kept under
``runs/``, so ``python -m bench --replot DIR`` redraws an old run. Throughput is
the receiver's (bytes stored), smoothed over one second; memory is PSS per process
stacked, so the top edge is ΣPSS. t = 0 is the first progress report; the
connection's setup shows at negative t.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from bench.series import Telemetry, load_telemetry, rate_series

MIB = 2**20
ROLE_COLORS = {
    "supervisor": "#8c8c8c",
    "connection": "#1f77b4",
    "reader": "#2ca02c",
    "writer": "#2ca02c",
    "hasher": "#ff7f0e",
}


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"font.size": 10, "axes.grid": True, "grid.alpha": 0.3, "axes.titlesize": 11})
    return plt


def _telemetry(results_dir: Path, run: dict[str, Any], side: str) -> Telemetry | None:
    path = results_dir / "runs" / run.get("run_dir", "") / f"{side}.telemetry.jsonl"
    return load_telemetry(path) if run.get("run_dir") and path.exists() else None


def _stack_memory(ax: Any, tel: Telemetry, title: str) -> None:
    roles = tel.roles
    if not tel.memory:
        ax.set_title(title + " (no samples)")
        return
    t = [p.t for p in tel.memory]
    layers = [[p.pss.get(role, 0) / MIB for p in tel.memory] for role in roles]
    colors = [ROLE_COLORS.get(role, "#9467bd") for role in roles]
    ax.stackplot(t, layers, labels=roles, colors=colors, alpha=0.8, step="post")
    peak = max(p.sum_pss for p in tel.memory) / MIB
    ax.axhline(peak, color="black", lw=0.8, ls=":")
    ax.annotate(f"peak ΣPSS {peak:.0f} MiB", (t[-1], peak), ha="right", va="bottom", fontsize=9)
    ax.set_ylabel("PSS (MiB)")
    ax.set_title(title)
    ax.set_ylim(0, peak * 1.25)
    ax.legend(loc="lower left", fontsize=8, ncol=len(roles))


def _mbps(series: list[tuple[float, float]]) -> tuple[list[float], list[float]]:
    return [t for t, _ in series], [r / 1e6 for _, r in series]


def _raw_rate(raw: dict[str, Any]) -> list[tuple[float, float]]:
    points = raw.get("series") or []
    out = []
    for (t0, b0), (t1, b1) in itertools.pairwise(points):
        if t1 > t0:
            out.append((t1, (b1 - b0) / (t1 - t0)))
    return out


def plot_transfer(results: dict[str, Any], results_dir: Path, run: dict[str, Any], title: str, out: Path) -> Path | None:
    """Throughput over time (with the ceiling) and ΣPSS per process of both sides."""
    receiver, sender = _telemetry(results_dir, run, "receiver"), _telemetry(results_dir, run, "sender")
    if receiver is None or sender is None:
        return None
    plt = _plt()
    fig, axes = plt.subplots(3, 1, figsize=(11, 10), sharex=True, gridspec_kw={"height_ratios": [1.3, 1, 1]})
    ax = axes[0]
    ceiling_runs = results.get("scenarios", {}).get("ceiling", {}).get("runs", [])
    for i, raw in enumerate(ceiling_runs[:1]):
        t, r = _mbps(_raw_rate(raw))
        ax.plot(t, r, color="#bbbbbb", lw=1, label="raw aiortc (ceiling run)" if i == 0 else None)
    ceiling_rate = (results.get("scenarios", {}).get("ceiling", {}).get("result") or {}).get("steady_bytes_per_s")
    if ceiling_rate:
        ax.axhline(ceiling_rate / 1e6, color="black", ls="--", lw=1, label=f"ceiling median {ceiling_rate / 1e6:.1f} MB/s")
        ax.axhline(0.9 * ceiling_rate / 1e6, color="red", ls=":", lw=1, label="0.9 × ceiling (target)")
    t, r = _mbps(rate_series(receiver.progress))
    ax.plot(t, r, color="#1f77b4", lw=1.5, label="pipeline, receiver (1 s average)")
    steady = run.get("steady_bytes_per_s")
    if steady:
        ax.axhline(steady / 1e6, color="#1f77b4", ls="--", lw=1, label=f"pipeline steady {steady / 1e6:.1f} MB/s")
    # Stalls before the first byte are the connection's start; only later ones are hiccups.
    for stall in receiver.stalls + sender.stalls:
        if stall.get("bytes_done", 0) > 0:
            ax.axvspan(stall["start"], stall["start"] + stall["duration"], color="red", alpha=0.15)
    ax.set_ylabel("MB/s")
    ax.set_ylim(bottom=0)
    if steady and ceiling_rate:
        title += f"\npipeline steady = {steady / ceiling_rate:.2f} × ceiling"
    ax.set_title(title)
    ax.legend(loc="lower center", fontsize=8, ncol=2)
    _stack_memory(axes[1], sender, "sender: PSS per process (stacked = ΣPSS)")
    _stack_memory(axes[2], receiver, "receiver: PSS per process (stacked = ΣPSS)")
    axes[2].set_xlabel("seconds since the first progress report (setup is < 0); red bands: stalls ≥ 1 s after the first byte")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_memory(results: dict[str, Any], results_dir: Path, out: Path) -> Path | None:
    scenario = results.get("scenarios", {}).get("memory")
    if not scenario or "runs" not in scenario:
        return None
    runs = [r for r in scenario["runs"] if r["ok"]]
    if not runs:
        return None
    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [1, 1.6]})
    labels = [_size_label(r["bytes"]) for r in runs]
    x = range(len(runs))
    width = 0.38
    for offset, side, color in ((-width / 2, "sender", "#1f77b4"), (width / 2, "receiver", "#ff7f0e")):
        values = [r["sides"][side]["peak_sum_pss"] / MIB for r in runs]
        bars = left.bar([i + offset for i in x], values, width, label=side, color=color)
        left.bar_label(bars, fmt="%.0f", fontsize=8)
    raw = (results.get("scenarios", {}).get("ceiling", {}).get("result") or {}).get("peak_pss") or {}
    if raw:
        left.axhline(raw["sender"] / MIB, color="black", ls=":", lw=1, label="raw aiortc peer (one process)")
    left.set_xticks(list(x), labels)
    left.set_xlabel("file size")
    left.set_ylabel("peak ΣPSS (MiB)")
    ratios = scenario.get("result", {})
    left.set_title(
        "peak ΣPSS per side; largest/smallest: sender "
        f"{ratios.get('sender_largest_over_smallest') or 0:.2f}×, receiver {ratios.get('receiver_largest_over_smallest') or 0:.2f}×",
        fontsize=10,
    )
    left.legend(fontsize=8, loc="lower right")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, run in enumerate(runs):
        for side, style in (("sender", "-"), ("receiver", "--")):
            tel = _telemetry(results_dir, run, side)
            if tel is None or not tel.memory or not tel.progress:
                continue
            end = tel.progress[-1].t or 1.0
            points = [p for p in tel.memory if p.t >= 0]
            right.plot(
                [100 * p.t / end for p in points],
                [p.sum_pss / MIB for p in points],
                style,
                color=colors[i % len(colors)],
                label=f"{labels[i]} {side}",
            )
    right.set_xlabel("% of the transfer's time")
    right.set_ylabel("ΣPSS (MiB)")
    right.set_ylim(bottom=0)
    right.set_title("ΣPSS over the transfer (solid: sender, dashed: receiver)")
    right.legend(fontsize=8, ncol=2, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_media(results: dict[str, Any], results_dir: Path, out: Path) -> Path | None:
    scenario = results.get("scenarios", {}).get("media")
    if not scenario or "runs" not in scenario:
        return None
    cases = {case: next((r for r in runs if r["ok"]), None) for case, runs in scenario["runs"].items()}
    if not all(cases.values()):
        return None
    plt = _plt()
    fig, axes = plt.subplots(2, 1, figsize=(11, 8), sharex=True)
    styles = {"dir": ("#d62728", f"directory ({scenario['params']['files']} files)"), "file": ("#1f77b4", "one file")}
    for case, run in cases.items():
        assert run is not None
        color, label = styles[case]
        receiver = _telemetry(results_dir, run, "receiver")
        sender = _telemetry(results_dir, run, "sender")
        if receiver is None or sender is None:
            continue
        t, r = _mbps(rate_series(receiver.progress))
        axes[0].plot(t, r, color=color, label=f"{label}: steady {(run['steady_bytes_per_s'] or 0) / 1e6:.1f} MB/s")
        for tel, style, side in ((sender, "-", "sender"), (receiver, "--", "receiver")):
            axes[1].plot([p.t for p in tel.memory], [p.sum_pss / MIB for p in tel.memory], style, color=color, label=f"{label}, {side}")
    result = scenario.get("result", {})
    axes[0].set_title(
        f"{scenario['title']}\ndirectory / one file: {result.get('ratio_steady') or 0:.2f}× steady, "
        f"{result.get('files_per_s') or 0:.0f} files/s"
    )
    axes[0].set_ylabel("MB/s (receiver, 1 s average)")
    axes[0].set_ylim(bottom=0)
    axes[0].legend(fontsize=8, loc="lower center")
    axes[1].set_ylabel("ΣPSS (MiB)")
    axes[1].set_ylim(bottom=0)
    axes[1].set_xlabel("seconds since the first progress report")
    axes[1].legend(fontsize=8, ncol=2, loc="lower center")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_sweep(results: dict[str, Any], out: Path) -> Path | None:
    scenario = results.get("scenarios", {}).get("sweep")
    if not scenario or "points" not in scenario:
        return None
    if not any(r["ok"] for r in scenario["defaults_runs"]) and not any(p["steady_bytes_per_s"] for p in scenario["points"]):
        return None
    plt = _plt()
    base = scenario["result"].get("defaults_steady_bytes_per_s")
    ceiling = scenario["result"].get("ceiling_steady_bytes_per_s")
    labels, rates, memory, colors = [], [], [], []
    palette = {"defaults": "#444444", "chunk_size": "#1f77b4", "window": "#ff7f0e", "ring_slots": "#2ca02c", "buffered": "#9467bd", "grid": "#17becf"}
    for r in scenario["defaults_runs"]:
        if r["ok"]:
            labels.append("defaults")
            rates.append((r["steady_bytes_per_s"] or 0) / 1e6)
            memory.append((r["sides"]["sender"]["peak_sum_pss"] + r["sides"]["receiver"]["peak_sum_pss"]) / MIB)
            colors.append(palette["defaults"])
    for p in scenario["points"]:
        n = sum(1 for r in p["runs"] if r["ok"])
        label = f"{p['dimension']}: {p['label']}" if p["dimension"] != "grid" else p["label"]
        labels.append(label + (f" (n={n})" if n > 1 else ""))
        rates.append((p["steady_bytes_per_s"] or 0) / 1e6)
        memory.append((p.get("peak_sum_pss_both") or 0) / MIB)
        colors.append(palette.get(p["dimension"], "#17becf"))
    height = max(4.0, 0.42 * len(labels) + 1.5)
    fig, (ax, mx) = plt.subplots(1, 2, figsize=(13, height), sharey=True, gridspec_kw={"width_ratios": [1.5, 1]})
    y = list(range(len(labels)))[::-1]
    bars = ax.barh(y, rates, color=colors)
    ax.bar_label(bars, labels=[f"{v:.1f}" + (f"  ({v * 1e6 / base:.2f}×)" if base else "") for v in rates], fontsize=8, padding=2)
    if base:
        ax.axvline(base / 1e6, color="#444444", ls="--", lw=1, label=f"defaults median {base / 1e6:.1f} MB/s")
    if ceiling:
        ax.axvline(ceiling / 1e6, color="black", lw=1.2, label=f"ceiling (raw aiortc) {ceiling / 1e6:.1f} MB/s")
    ax.set_yticks(y, labels, fontsize=8)
    ax.set_xlabel("steady throughput, MB/s (ratio to the defaults' median)")
    ax.set_xlim(0, max([*rates, (ceiling or 0) / 1e6]) * 1.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12 * 8 / height), ncol=2)
    ax.set_title(scenario["title"])
    mbars = mx.barh(y, memory, color=colors, alpha=0.7)
    mx.bar_label(mbars, fmt="%.0f", fontsize=8, padding=2)
    mx.set_xlabel("peak ΣPSS, sender + receiver (MiB)")
    mx.set_xlim(0, max(memory or [1]) * 1.2)
    mx.set_title("memory cost")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_profile(results: dict[str, Any], out: Path) -> Path | None:
    """Self time by module: pipeline's connection process next to the raw aiortc peer."""
    scenario = results.get("scenarios", {}).get("profile")
    profiles = {n: p for n, p in (scenario or {}).get("profiles", {}).items() if p}
    if not profiles:
        return None
    plt = _plt()
    modules: dict[str, None] = {}
    for p in profiles.values():
        for module, _ in p["self_by_module"][:8]:
            modules.setdefault(module, None)
    names = list(modules)
    fig, axes = plt.subplots(1, 2, figsize=(13, 0.42 * len(names) + 2.2), sharey=True)
    for ax, side in zip(axes, ("sender", "receiver"), strict=True):
        pairs = ((f"pipeline-{side}-connection", "#1f77b4"), (f"raw-{side}", "#aaaaaa"))
        for j, (name, color) in enumerate(pairs):
            profile = profiles.get(name)
            if profile is None:
                continue
            shares = dict(profile["self_by_module"])
            ys = [i + (j - 0.5) * 0.4 for i in range(len(names))]
            label = f"{name} (busy {profile['busy_share'] * 100:.0f} %)"
            values = [100 * shares.get(m, 0) for m in names]
            bars = ax.barh(ys, values, 0.4, color=color, label=label)
            ax.bar_label(bars, labels=[f"{v:.1f}" if v else "" for v in values], fontsize=7, padding=2)
        ax.set_yticks(range(len(names)), names, fontsize=8)
        ax.set_title(f"{side}: connection process vs raw aiortc peer", fontsize=10)
        ax.set_xlabel("% of samples, leaf frame in this module (self time)")
        ax.legend(fontsize=8, loc="lower right")
    axes[0].invert_yaxis()  # once: the y axis is shared
    fig.suptitle(scenario["title"] if scenario else "profile", fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def plot_impairment(results: dict[str, Any], out: Path) -> Path | None:
    """Rate per lab condition: pipeline, raw aiortc and Chromium ↔ Chromium (log scale:
    the conditions span 0.1 to 25 MB/s)."""
    scenario = results.get("scenarios", {}).get("impairment")
    conditions = (scenario or {}).get("conditions") or []
    if not conditions:
        return None
    plt = _plt()
    series = (
        ("pipeline_bytes_per_s", "pipeline", "#1f77b4"),
        ("raw_bytes_per_s", "raw aiortc (as shipped, connect-time cap)", "#aaaaaa"),
        ("chromium_bytes_per_s", "Chromium ↔ Chromium", "#ff7f0e"),
    )
    fig, ax = plt.subplots(figsize=(11, 0.7 * len(conditions) + 2))
    names = [c["label"] for c in conditions]
    for j, (key, label, color) in enumerate(series):
        ys = [i + (j - 1) * 0.27 for i in range(len(names))]
        values = [(c.get(key) or 0) / 1e6 for c in conditions]
        bars = ax.barh(ys, [v or 1e-3 for v in values], 0.27, color=color, label=label)
        ax.bar_label(bars, labels=[f"{v:.2f}" if v else "–" for v in values], fontsize=7, padding=2)
    ax.set_xscale("log")
    ax.set_yticks(range(len(names)), names, fontsize=9)
    ax.invert_yaxis()
    ax.set_xlabel("MB/s, first byte → last byte on the receiver (log scale; medians of the runs)")
    ax.set_title(scenario["title"], fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def _size_label(n: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20)):
        if n >= scale:
            return f"{n / scale:g} {unit}"
    return f"{n} B"


def plot_all(results: dict[str, Any], results_dir: Path) -> list[Path]:
    """Every plot this results directory can support; returns the files written."""
    written: list[Path | None] = []
    large = results.get("scenarios", {}).get("large-file", {})
    run = next((r for r in large.get("runs", []) if r["ok"]), None)
    if run is not None:
        written.append(plot_transfer(results, results_dir, run, large["title"], results_dir / "large_file.png"))
    written.append(plot_memory(results, results_dir, results_dir / "memory_vs_size.png"))
    written.append(plot_media(results, results_dir, results_dir / "media.png"))
    written.append(plot_sweep(results, results_dir / "sweep.png"))
    written.append(plot_profile(results, results_dir / "profile.png"))
    written.append(plot_impairment(results, results_dir / "impairment.png"))
    return [p for p in written if p is not None]
