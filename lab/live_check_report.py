"""The live check's feature comparison and its report files (``live-check.md`` and ``.json``).

:func:`compare_features` sets a few key features of the live flows of each label beside the training rows
of the nearest CIC-IDS2017 family (loaded as training loads them: corrected release, 1 ms resolution);
:func:`link_basis` measures the CIC-IDS2017 benign TCP rows the WAN link's rate is chosen from;
:func:`write_reports` renders the document :func:`lab.live_check.run_check` builds (one section
per link condition, both side by side first).
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tapwatch.features.errors import TapwatchError

KEY_FEATURES = (
    "Flow Duration", "Total Fwd Packet", "Total Bwd packets", "Total Length of Fwd Packet",
    "Total Length of Bwd Packet", "Flow IAT Max", "Flow Packets/s", "FWD Init Win Bytes", "Bwd Init Win Bytes",
    "Fwd Seg Size Min", "SYN Flag Count", "RST Flag Count", "FIN Flag Count",
)  # fmt: skip
"""Features that tell the five labels apart: duration, volume, timing, TCP windows, flags."""
FAMILIES: dict[str, tuple[str, int | None, str]] = {
    "nmap-syn-scan": ("Portscan", None, "CIC-IDS2017's port scans were nmap scans too"),
    "syn-flood": ("Portscan", None, "CIC-IDS2017 has no SYN flood; its scans are the nearest SYN-only flows"),
    "slowloris": ("DoS Slowloris", None, "the same attack, another implementation, against Apache"),
    "benign-http": ("BENIGN", 6, "benign TCP rows"),
    "benign-dns": ("BENIGN", 17, "benign UDP rows"),
}
"""Per label: the training class compared with, a protocol filter (None: all), why this class."""
QUANTILES = (0.05, 0.5, 0.95)
ATTACK = ("nmap-syn-scan", "syn-flood", "slowloris")
BENIGN = ("benign-http", "benign-dns")
MISS_BELOW = 0.5
"""A model that flags fewer than this share of an attack's flows is said to miss it."""
SHIFT = 0.1
"""A change of rate between the two window views that the findings mention."""


def _quantiles(values: pd.Series) -> dict[str, float]:
    q = values.quantile(list(QUANTILES)) if len(values) else pd.Series([np.nan] * 3, index=QUANTILES)
    return {f"p{round(k * 100)}": float(v) for k, v in q.items()}


def _percentile_of(train: pd.Series, value: float) -> float:
    """Where ``value`` falls in ``train`` (0-100, ties counted half)."""
    return float(100 * ((train < value).mean() + 0.5 * (train == value).mean())) if len(train) else float("nan")


def _inside(value: float, q: dict[str, float]) -> bool:
    return bool(q["p5"] <= value <= q["p95"])


@lru_cache(maxsize=2)
def _training(datasets: Path) -> Any:
    """The CIC-IDS2017 rows as training loads them (once per run: every condition compares with them)."""
    from tapwatch.models.training.data_cic import load_cic_ids2017

    return load_cic_ids2017(datasets)


def _training_or_why(datasets: Path | None) -> Any:
    """The training rows, or ``{"skipped": reason}`` when they are unavailable."""
    if datasets is None:
        return {"skipped": "no datasets folder (--datasets)"}
    try:
        return _training(datasets)
    except (TapwatchError, OSError) as err:
        return {"skipped": f"training rows unavailable: {err}"}


def compare_features(flows: pd.DataFrame, labels: pd.Series, datasets: Path | None) -> dict[str, Any]:
    """Key features of each label's live flows beside the training rows of its family (quantiles)."""
    ds = _training_or_why(datasets)
    if isinstance(ds, dict):
        return ds
    out: dict[str, Any] = {"dataset": "corrected CIC-IDS2017 subset, 1 ms resolution (as trained)", "labels": {}}
    for label, (family, proto, why) in FAMILIES.items():
        live = flows.loc[labels == label, list(KEY_FEATURES)].apply(pd.to_numeric, errors="coerce")
        rows = ds.y == family
        if proto is not None:
            rows &= ds.X["Protocol"] == proto
        train = ds.X.loc[rows.to_numpy(), list(KEY_FEATURES)]
        feats: dict[str, dict[str, Any]] = {}
        outside = []
        for f in KEY_FEATURES:
            lq, tq = _quantiles(live[f].dropna()), _quantiles(train[f])
            at = _percentile_of(train[f], lq["p50"]) if len(live) else None
            feats[f] = {"live": lq, "training": tq, "live_p50_training_percentile": at}
            if len(live) and not _inside(lq["p50"], tq):
                outside.append(f)
        out["labels"][label] = {
            "family": family, "protocol": proto, "why": why, "live_flows": len(live),
            "training_rows": int(rows.sum()), "features": feats, "outside_p5_p95": outside,
        }  # fmt: skip
    return out


BULK_BYTES = 100_000
"""Benign TCP rows with at least this many backward bytes are the downloads whose rate the WAN link copies."""


def link_basis(datasets: Path | None, rate_mbit: float) -> dict[str, Any]:
    """What CIC-IDS2017's benign TCP rows say about the link their traffic crossed.

    Per row of the downloads (:data:`BULK_BYTES` or more backward), the backward rate over the flow's active
    time (``Flow Duration`` less its longest idle gap ``Idle Max``), in Mbit/s; for every benign TCP row the
    duration (s) and ``Flow Packets/s``: the quantities the LAN traffic lies outside of; and the share of
    the downloads slower than ``rate_mbit``, the WAN link's rate.
    """
    ds = _training_or_why(datasets)
    if isinstance(ds, dict):
        return ds
    rows = ((ds.y == "BENIGN") & (ds.X["Protocol"] == 6)).to_numpy()
    tcp = ds.X.loc[rows]
    bulk = tcp[tcp["Total Length of Bwd Packet"] >= BULK_BYTES]
    active_us = (bulk["Flow Duration"] - bulk["Idle Max"].clip(lower=0)).clip(lower=1)
    mbit = bulk["Total Length of Bwd Packet"] * 8 / active_us
    q = (0.5, 0.95, 0.99, 1.0)
    return {
        "rows": "corrected CIC-IDS2017 subset, BENIGN, protocol 6",
        "tcp_rows": len(tcp),
        "bulk_rows": len(bulk),
        "bulk_min_bwd_bytes": BULK_BYTES,
        "bulk_active_mbit_s": {f"p{round(k * 100)}": float(v) for k, v in mbit.quantile(list(q)).items()},
        "wan_rate_mbit": rate_mbit,
        "bulk_share_slower_than_wan_rate": float((mbit < rate_mbit).mean()) if len(mbit) else None,
        "duration_s": _quantiles(tcp["Flow Duration"] / 1e6),
        "flow_packets_s": _quantiles(tcp["Flow Packets/s"]),
    }


# -- rendering ------------------------------------------------------------------------------------
def _cell(d: dict[str, Any] | None) -> str:
    if not d or not d.get("flows"):
        return "–"
    lo, hi = d["ci95"]
    return f"{d['flagged']}/{d['flows']} ({100 * d['rate']:.1f} %; {100 * lo:.1f}–{100 * hi:.1f})"


def _num(v: float | None) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "–"
    return f"{v:.4g}" if abs(v) < 1e6 else f"{v:.3e}"


def _missed(m: dict[str, Any], lab: str) -> bool:
    return "by_label" in m and (m["by_label"][lab]["rate"] or 0.0) < MISS_BELOW


def _flagged_as(d: dict[str, Any]) -> str:
    top = list(d["flagged_as"].items())[:2]
    return " and ".join(f"{k} ({v})" for k, v in top) if top else "nothing"


def _findings(models: list[dict[str, Any]], control: bool = True) -> list[str]:
    lines = []
    for m in models:
        if "error" in m:
            lines.append(f"- **{m['name']}** could not score the flows: {m['error']}")
            continue
        missed = [lab for lab in ATTACK if _missed(m, lab)]
        caught = [f"{lab} (mostly as {_flagged_as(m['by_label'][lab])})" for lab in ATTACK if lab not in missed]
        far = m["benign"]["rate"]
        text = f"- **{m['name']}** (threshold {m['threshold']:.4g}): "
        text += f"**misses {', '.join(missed)}**; " if missed else "misses no attack; "
        text += f"detects {', '.join(caught)}; " if caught else "detects none of the attacks; "
        text += f"false alarms on {100 * far:.1f} % of the benign flows." if far is not None else "no benign flows."
        lines.append(text + (_control_shift(m) if control else ""))
    return lines


def _control_shift(m: dict[str, Any]) -> str:
    """The labels whose rate moves by ``SHIFT`` or more when windows hold one label's flows only."""
    moved = []
    for lab in (*ATTACK, *BENIGN):
        main, ctrl = m["by_label"][lab]["rate"], m["same_label_windows"]["by_label"][lab]["rate"]
        if main is not None and ctrl is not None and abs(ctrl - main) >= SHIFT:
            moved.append(f"{lab} {100 * main:.1f} % → {100 * ctrl:.1f} %")
    return f" With one-label windows (control): {'; '.join(moved)}." if moved else ""


def _outside_text(feature: str, v: dict[str, Any]) -> str:
    train = v["training"]
    return f"{feature} {_num(v['live']['p50'])} (training p5–p95 {_num(train['p5'])}–{_num(train['p95'])})"


def _reasons(c: dict[str, Any]) -> list[str]:
    """Per label: which key features of the live flows lie outside the training family's range."""
    feats = c["features"]
    if "skipped" in feats:
        return [f"- Feature comparison skipped: {feats['skipped']}."]
    lines = []
    for lab in (*ATTACK, *BENIGN):
        info = feats["labels"][lab]
        if not info["live_flows"]:
            continue
        missed_by = [m["name"] for m in c["models"] if lab in ATTACK and _missed(m, lab)]
        out = ", ".join(_outside_text(f, info["features"][f]) for f in info["outside_p5_p95"])
        missed = f" (missed by {', '.join(missed_by)})" if missed_by else ""
        head = f"- **{lab}**{missed} against "
        head += f"{info['family']} ({info['why']}): "
        inside = "every key feature's live median is inside the family's 5–95 % range."
        lines.append(head + (f"live medians outside the family's 5–95 % range: {out}." if out else inside))
    return lines


def _feature_tables(c: dict[str, Any], h: str) -> list[str]:
    feats = c["features"]
    if "skipped" in feats:
        return []
    lines = [f"{h} Live flows against the training rows of the same family", "",
             f"Training rows: {feats['dataset']}. Quantiles p5 / p50 / p95; the last column is where the live "
             "median falls among the training rows (percentile).", ""]  # fmt: skip
    for lab, info in feats["labels"].items():
        proto = f", protocol {info['protocol']}" if info["protocol"] is not None else ""
        lines += [f"{h}# {lab}: {info['live_flows']} live flows vs {info['training_rows']} training rows of "
                  f"{info['family']}{proto} ({info['why']})", "",
                  "| feature | live p5 / p50 / p95 | training p5 / p50 / p95 | live p50 at training pct |",
                  "|---|---|---|---|"]  # fmt: skip
        for f, v in info["features"].items():
            live = " / ".join(_num(v["live"][k]) for k in ("p5", "p50", "p95"))
            train = " / ".join(_num(v["training"][k]) for k in ("p5", "p50", "p95"))
            lines.append(f"| {f} | {live} | {train} | {_num(v['live_p50_training_percentile'])} |")
        lines.append("")
    return lines


def _rate_table(models: list[dict[str, Any]], key: str | None) -> list[str]:
    """Flagged / flows (rate; 95 % Wilson interval) per model and label; ``key`` picks the control's tally."""
    lines = [f"| model | threshold | {' | '.join(ATTACK)} | all attacks | {' | '.join(BENIGN)} | all benign |",
             "|---|---|" + "---|" * (len(ATTACK) + len(BENIGN) + 2)]  # fmt: skip
    for m in models:
        if "error" in m:
            continue
        t = m[key] if key else m
        by = t["by_label"]
        cells = [*(_cell(by[x]) for x in ATTACK), _cell(t["attack"]), *(_cell(by[x]) for x in BENIGN)]
        cells.append(_cell(t["benign"]))
        lines.append(f"| {m['name']} {m['version']} | {m['threshold']:.4g} | " + " | ".join(cells) + " |")
    return lines


def _predicted(models: list[dict[str, Any]]) -> list[str]:
    lines = ["Predicted classes (arg max, every flow, whatever its score):", "",
             "| model | label | predicted classes |", "|---|---|---|"]  # fmt: skip
    for m in models:
        for lab, d in m.get("by_label", {}).items():
            top = ", ".join(f"{k} {v}" for k, v in list(d["predicted"].items())[:4])
            lines.append(f"| {m['name']} | {lab} | {top} |")
    return lines


def _result_section(c: dict[str, Any], h: str) -> list[str]:
    return [f"{h} Result (tapwatch flows)", "", *_findings(c["models"]), "",
            "Detection rate (attack labels) and false-alarm rate (benign labels): flagged / flows (rate; 95 % "
            "Wilson interval, %).", "", *_rate_table(c["models"], None), "",
            "Control, windows that hold one label's flows only (`Src IP` keyed as `IP#label`, features "
            "unchanged): whether a detection needs the attacker's earlier flows of another phase in its window.",
            "", *_rate_table(c["models"], "same_label_windows"), "", *_predicted(c["models"]), "",
            f"{h} Live features against training", "", *_reasons(c), ""]  # fmt: skip


def _pypi_section(c: dict[str, Any], h: str) -> list[str]:
    part = c["cicflowmeter"]
    head = f"{h} The PyPI cicflowmeter on the same capture"
    if "skipped" in part:
        return [head, "", f"Left out: {part['skipped']}.", ""]
    flows, tool = part["flows"], part["tool"]
    filled = ", ".join(f"`{k}` = {v:g}" for k, v in part["filled"].items())
    uses = "; ".join(f"{m['name']}: {', '.join(m['filled_features']) or 'none'}" for m in part["models"])
    return [head, "",
            f"- `{tool['command']}` (cicflowmeter {tool['cicflowmeter']}, scapy {tool['scapy']}, numpy "
            f"{tool['numpy']}) in {part['wall_s']['cicflowmeter_with_tapwatch_meanwhile']} s (while tapwatch extracted "
            f"and scored the same capture); scoring its flows {part['wall_s']['scoring']} s.",
            f"- Flows: {flows['total']}; labelled {flows['labelled']} "
            f"({', '.join(f'{k} {v}' for k, v in flows['by_label'].items())}); unmatched {flows['unmatched']['flows']}"
            f"; ambiguous {flows['ambiguous']}. Each PyPI flow takes the first-packet time of the tapwatch flow of "
            f"the same 5-tuple that starts within its whole-second timestamp ({part['matched_to_tapwatch_flows']} "
            "matched); the phase table then labels it as it labels tapwatch's flows.",
            f"- Columns PyPI does not write, filled: {filled} (CIC-IDS2017 writes -1 for the ICMP fields of TCP "
            f"and UDP flows; PyPI counts RSTs of both directions together and has no TCP flow time). Used by "
            f"each model: {uses}.",
            f"- Timestamp: {part['timestamp']}. Scored as `tapwatch score` scores any CICFlowMeter CSV (time "
            "features quantised from µs to 1 ms); no one-label control for these flows.", "",
            *_findings(part["models"], control=False), "", *_rate_table(part["models"], None), "",
            *_predicted(part["models"]), ""]  # fmt: skip


def _model_text(m: dict[str, Any]) -> str:
    return f"{m['name']} {m['version']} ({m['onnx']}, sha256 {str(m['sha256'])[:12]}…, T={m['window_length']})"


def _data_section(c: dict[str, Any], h: str) -> list[str]:
    prov, flows = c["provenance"], c["flows"]
    unmatched = flows["unmatched"]
    by_src = f" (by source: {unmatched['by_src_ip']})" if unmatched["flows"] else ""
    return [f"{h} Data", "",
            f"- Flows: {flows['total']} from `tapwatch flows`; labelled {flows['labelled']} "
            f"({', '.join(f'{k} {v}' for k, v in flows['by_label'].items())}); unmatched {unmatched['flows']}"
            f"{by_src}; ambiguous "
            f"{flows['ambiguous']}; still running after their phase ended {flows['outlasted_phase']}.",
            f"- Attack flows from the attacker's address: {flows['attack_flows_from_attacker']} of "
            f"{flows['attack_flows']}.",
            f"- Phases: {', '.join(f'{k} {v}' for k, v in c['phases'].items())} (table in the JSON).",
            f"- Traffic: {prov['source']}; pcap {json.dumps(prov['pcap'])}.",
            f"- Plan: {json.dumps(prov['plan'])}." if prov["plan"] else "- Plan: not known (given pcap).",
            *(f"- {tool}: {version}" for tool, version in prov["tools"].items()),
            f"- Wall time (s): {json.dumps(prov['wall_s'])}.",
            "- Models: " + "; ".join(_model_text(m) for m in c["models"]) + ".", ""]  # fmt: skip


def _short(d: dict[str, Any] | None) -> str:
    if not d or not d.get("flows"):
        return "–"
    return f"{d['flagged']}/{d['flows']} ({100 * d['rate']:.1f} %)"


def _side_by_side(doc: dict[str, Any]) -> list[str]:
    """Per model, condition and extractor: each attack's detection rate, each benign label's false alarms."""
    lines = ["| model | link | flows by | " + " | ".join(ATTACK) + " | all attacks | " + " | ".join(BENIGN)
             + " | all benign | all benign, one-label windows |",
             "|---|---|---|" + "---|" * (len(ATTACK) + len(BENIGN) + 3)]  # fmt: skip
    names = [m["name"] for m in next(iter(doc["conditions"].values()))["models"]]
    for name in names:
        for link, c in doc["conditions"].items():
            pypi = c["cicflowmeter"].get("models", [])
            for who, models in (("tapwatch", c["models"]), ("PyPI cicflowmeter", pypi)):
                m = next((x for x in models if x["name"] == name), None)
                if m is None:
                    continue
                if "error" in m:
                    lines.append(f"| {name} | {link} | {who} | could not score: {m['error'][:80]} |")
                    continue
                by = m["by_label"]
                ctrl = _short(m["same_label_windows"]["benign"]) if "same_label_windows" in m else "–"
                cells = [*(_short(by[x]) for x in ATTACK), _short(m["attack"]), *(_short(by[x]) for x in BENIGN),
                         _short(m["benign"]), ctrl]  # fmt: skip
                lines.append(f"| {name} | {link} | {who} | " + " | ".join(cells) + " |")
    return lines


def _conditions_section(doc: dict[str, Any]) -> list[str]:
    lines = ["## Link conditions", ""]
    for link, c in doc["conditions"].items():
        info = c["link"]
        asked = f"; asked for {json.dumps(info['asked'])}" if info.get("asked") else ""
        shown = f"; `tc qdisc show`: `{info['qdisc']}`" if info.get("qdisc") else ""
        lines.append(f"- **{link}**: {info['applied']}{asked}{shown}.")
    basis = doc["link_basis"]
    if "skipped" in basis:
        lines.append(f"- WAN rate basis: skipped ({basis['skipped']}).")
    else:
        b, d, r = basis["bulk_active_mbit_s"], basis["duration_s"], basis["flow_packets_s"]
        lines += [
            f"- Why that rate: in the {basis['tcp_rows']} benign TCP rows of the training data "
            f"({basis['rows']}), the {basis['bulk_rows']} downloads of {basis['bulk_min_bwd_bytes']:,} backward "
            f"bytes or more moved them at p50 {b['p50']:.3g}, p95 {b['p95']:.3g}, p99 {b['p99']:.3g}, max "
            f"{b['p100']:.3g} Mbit/s over their active time (duration less the longest idle gap); "
            f"{100 * basis['bulk_share_slower_than_wan_rate']:.1f} % of them were slower than the WAN link's "
            f"{basis['wan_rate_mbit']:g} Mbit/s. So the link caps the benign downloads near the fastest ones the "
            "training data holds, not below what CIC's clients got.",
            f"- What it cannot copy: those rows last p5 {d['p5']:.3g} s, p50 {d['p50']:.3g} s, p95 {d['p95']:.3g} s "
            f"and run at p50 {r['p50']:.3g}, p95 {r['p95']:.3g} packets/s; most of that is round trips to "
            "internet servers and idle keep-alive time, which only a delay (netem) or a different client "
            "(think time, keep-alive) adds, not a rate limit.",
        ]
    return [*lines, ""]


def _condition_section(link: str, c: dict[str, Any]) -> list[str]:
    h = "###"
    return [f"## Condition: {link}", "", f"Link: {c['link']['applied']}.", "", *_result_section(c, h),
            *_pypi_section(c, h), *_feature_tables(c, h), *_data_section(c, h)]  # fmt: skip


NOTES = (
    "One run of generated traffic per condition, not a model evaluation: no seeds, no spread beyond the "
    "intervals. Rates say what each shipped model does on this traffic, nothing more; the benign traffic is small "
    "and repetitive.",
    "Flows in no phase (unmatched) or in two (ambiguous) are counted above and left out of every rate.",
    "The benign client alternates rounds of HTTP downloads and DNS queries, so in the main view its windows "
    "mix both; the control shows what a host that only downloads (or only resolves) gets. Both are artificial; "
    "a real host's mix decides which one it resembles.",
    "Attack score and threshold are the worker's: `1 - P(BENIGN)` against the card's `attack` (or "
    "`attack_score`) threshold. A model that flags under half of an attack's flows is said to miss it.",
    "The SYN flood has no counterpart in CIC-IDS2017 (its DoS and DDoS classes are HTTP floods); a model can "
    "only flag it as something else, and does not have to name it.",
    "The two conditions are two separate runs of the same plan (the WAN one with the shaping); their traffic "
    "differs in the number of benign rounds as well as in the link.",
)


def render_markdown(doc: dict[str, Any]) -> str:
    """The Markdown report of a live-check document."""
    lines = ["# Live check: the shipped models on traffic of real attack tools", "",
             f"Generated by `{doc['generated_by']}` on {doc['date']} (tapwatch commit {doc['tapwatch_commit']}, "
             f"{doc['wall_s']} s); do not edit by hand.", "",
             "An attacker namespace ran an nmap SYN scan, an hping3 SYN flood and slowloris against a server "
             "namespace (busybox httpd, dnsmasq) while a benign client downloaded files and asked DNS; one "
             "tcpdump capture on the server's bridge per link condition; flows by `tapwatch flows` and, from the "
             "same capture, by the PyPI `cicflowmeter`; each flow labelled by its addresses and its start inside "
             "a phase; scored by `tapwatch score --model` with every shipped model. Flagged: attack score "
             "(1 - P(BENIGN)) at or over the card's threshold, as the worker alerts; each flow's window is its "
             "source host's last T flows up to it.", "",
             *_conditions_section(doc),
             "## Side by side", "",
             "Flagged / flows (rate) per model, link condition and flow extractor; attack columns are detection "
             "rates, benign columns false-alarm rates; the last column is the one-label-window control (tapwatch "
             "flows only). 95 % intervals are in each condition's section.", "",
             *_side_by_side(doc), ""]  # fmt: skip
    for link, c in doc["conditions"].items():
        lines += [f"### Findings, {link}", "", *_findings(c["models"]), ""]
        if "models" in c["cicflowmeter"]:
            lines += [f"PyPI cicflowmeter flows, {link}:", "", *_findings(c["cicflowmeter"]["models"], False), ""]
    for link, c in doc["conditions"].items():
        lines += _condition_section(link, c)
    return "\n".join([*lines, "## Notes", "", *(f"- {n}" for n in NOTES), ""])


def _finite(obj: Any) -> Any:
    """NaN (a quantile of no rows) as null, so that the JSON is strict."""
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_finite(v) for v in obj]
    return None if isinstance(obj, float) and not np.isfinite(obj) else obj


def write_reports(doc: dict[str, Any], out: Path, name: str) -> None:
    """``out/name.json`` (the document) and ``out/name.md`` (its rendering)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(_finite(doc), indent=1, default=str, allow_nan=False) + "\n")
    (out / f"{name}.md").write_text(render_markdown(doc))
