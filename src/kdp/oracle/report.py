# oracle.report: the agreement report. Per scenario: frames on each side,
# pairs, per-field tallies (equal / mapped / differ), and every disagreement
# (device, frame, field, kdp value, kernel value) with a side-by-side diff of
# the two frames on the device where they differ; frames only one side saw;
# order differences. Rendered as text or as a JSON-ready dict. Pure.
from __future__ import annotations

from .compare import Pair
from .runner import ScenarioResult


def _dev(d) -> str:
    return f"{d[0]}:{d[1]}"


def _frame_desc(p: Pair) -> dict:
    f = p.kdp or p.kernel
    return {"device": _dev(p.device), "direction": f.direction, "kdp_index": p.kdp_index,
            "kernel_index": p.kernel_index, "summary": f.summary()}


def scenario_dict(r: ScenarioResult) -> dict:
    fields: dict[str, dict] = {}
    disagreements, only = [], []
    pairs = agree = 0
    for dr in r.devices:
        for p in dr.pairs:
            if p.kdp is None or p.kernel is None:
                only.append(dict(_frame_desc(p), kind=p.kind,
                                 frame=(p.kdp or p.kernel).raw.hex()))
                continue
            pairs += 1
            agree += p.kind == "agree"
            for f in p.fields:
                t = fields.setdefault(f.name, {"compared": 0, "equal": 0, "mapped": 0, "derived": 0,
                                               "differ": 0})
                t["compared"] += 1
                t[f.status] += 1
            bad = [f for f in p.fields if f.status == "differ"]
            if bad:
                disagreements.append(dict(
                    _frame_desc(p), kdp_summary=p.kdp.summary(), kernel_summary=p.kernel.summary(),
                    fields=[{"field": f.name, "kdp": f.kdp, "kernel": f.kernel, "note": f.note} for f in bad],
                    diff=frame_diff(p)))
    order = [{"device": _dev(dr.device), "problem": o} for dr in r.devices for o in dr.order]
    equal = sum(t["equal"] for t in fields.values())
    mapped = sum(t["mapped"] for t in fields.values())
    differ = sum(t["differ"] for t in fields.values())
    derived = sum(t["derived"] for t in fields.values())
    ok = not disagreements and not only and not order
    return {"scenario": r.scenario.name, "description": r.scenario.description, "agree": ok,
            "injected": [{"at": f"{s.ns}:{s.dev}", "frame": s.frame.hex() if s.frame else "(built per side)",
                          "label": s.label}
                         for s in r.scenario.steps],
            "frames": {"kdp": r.kdp_frames, "kernel": r.kernel_frames, "paired": pairs,
                       "paired_agreeing": agree, "kdp_only": sum(o["kind"] == "missing-in-kernel" for o in only),
                       "kernel_only": sum(o["kind"] == "extra-in-kernel" for o in only)},
            "devices_compared": len(r.devices),
            "fields": {"compared": equal + mapped + derived + differ, "equal": equal, "mapped": mapped,
                       "derived": derived, "differ": differ,
                       "by_field": dict(sorted(fields.items()))},
            "mapped_random_values": dict(sorted(r.mapper.used.items())),
            "disagreements": disagreements, "unpaired": only, "order": order,
            "notes": r.notes, "kernel_conntrack": r.kernel_conntrack, "seconds": round(r.seconds, 3)}


def report_dict(results: list[ScenarioResult], info: dict | None = None, cluster: str = "") -> dict:
    scen = [scenario_dict(r) for r in results]
    tot = {"scenarios": len(scen), "agreeing": sum(s["agree"] for s in scen),
           "frames_paired": sum(s["frames"]["paired"] for s in scen),
           "fields_compared": sum(s["fields"]["compared"] for s in scen),
           "fields_equal": sum(s["fields"]["equal"] for s in scen),
           "fields_mapped": sum(s["fields"]["mapped"] for s in scen),
           "fields_derived": sum(s["fields"]["derived"] for s in scen),
           "fields_differ": sum(s["fields"]["differ"] for s in scen),
           "unpaired_frames": sum(len(s["unpaired"]) for s in scen)}
    mapped: dict[str, int] = {}
    for s in scen:
        for k, v in s["mapped_random_values"].items():
            mapped[k] = mapped.get(k, 0) + v
    tot["mapped_fields"] = dict(sorted(mapped.items()))
    return {"cluster": cluster, "session": info or {}, "summary": tot, "scenarios": scen}


def frame_diff(p: Pair) -> str:
    """Side-by-side field table of the two frames, differing lines marked."""
    w = max((len(f.name) for f in p.fields), default=10)
    lines = [f"  device {_dev(p.device)} ({p.kdp.direction}); kdp #{p.kdp_index}: {p.kdp.summary()}; "
             f"kernel #{p.kernel_index}: {p.kernel.summary()}"]
    for f in p.fields:
        mark = {"equal": " ", "mapped": "~", "derived": "=", "differ": "!"}[f.status]
        kv, rv = _short(f.kdp), _short(f.kernel)
        if f.status == "equal":
            lines.append(f"  {mark} {f.name:<{w}}  {kv}")
        else:
            lines.append(f"  {mark} {f.name:<{w}}  kdp {kv}  kernel {rv}" + (f"  ({f.note})" if f.note else ""))
    lines.append(f"    kdp    {p.kdp.raw.hex()}")
    lines.append(f"    kernel {p.kernel.raw.hex()}")
    return "\n".join(lines)


def _short(v, n: int = 96) -> str:
    s = str(v)
    return s if len(s) <= n else s[:n] + f"...({len(s)} chars)"


def report_text(rep: dict, verbose: bool = False) -> str:
    out = []
    s = rep["summary"]
    sess = rep.get("session", {})
    out.append(f"kernel oracle: {rep.get('cluster', '')}: {s['agreeing']}/{s['scenarios']} scenarios agree; "
               f"{s['frames_paired']} frames paired, {s['unpaired_frames']} unpaired; fields "
               f"{s['fields_compared']} compared: {s['fields_equal']} equal, {s['fields_mapped']} mapped "
               f"(kernel-random), {s['fields_derived']} derived checksums, {s['fields_differ']} differ")
    if s.get("mapped_fields"):
        out.append("  kernel-random values learned from the kernel capture and mapped onto kdp's (not compared "
                   "as values): " + ", ".join(f"{k} x{v}" for k, v in s["mapped_fields"].items()))
    if sess:
        out.append(f"  real twin: {sess.get('namespaces')} namespaces, {sess.get('devices')} devices, "
                   f"{sess.get('listeners')} listeners, built in {sess.get('build_seconds')} s, "
                   f"rules {'loaded' if sess.get('rules') else 'not loaded'}")
        for w in sess.get("warnings", []):
            out.append(f"  warning: {w}")
        for sk in sess.get("skipped", []):
            out.append(f"  skipped {sk['scenario']}: {sk['reason']}")
    for sc in rep["scenarios"]:
        f, fl = sc["frames"], sc["fields"]
        verdict = "AGREE" if sc["agree"] else "DIFFER"
        out.append(f"\n[{verdict}] {sc['scenario']}: {sc['description']}")
        out.append(f"  frames kdp {f['kdp']} kernel {f['kernel']}, paired {f['paired']} "
                   f"({f['paired_agreeing']} agree), kdp-only {f['kdp_only']}, kernel-only {f['kernel_only']}; "
                   f"fields {fl['compared']}: {fl['equal']} equal, {fl['mapped']} mapped, "
                   f"{fl['derived']} derived, {fl['differ']} differ"
                   f"; {sc['devices_compared']} devices, {sc['seconds']} s")
        if sc["mapped_random_values"]:
            out.append("  mapped (kernel-random): " + ", ".join(f"{k} x{v}" for k, v in
                                                              sc["mapped_random_values"].items()))
        for n in sc["notes"]:
            out.append(f"  note: {n}")
        for d in sc["disagreements"]:
            out.append(f"  ! {d['device']} {d['direction']} kdp #{d['kdp_index']} / kernel #{d['kernel_index']}: "
                       f"{d['kdp_summary']}")
            for fd in d["fields"]:
                out.append(f"      {fd['field']}: kdp {_short(fd['kdp'])}  kernel {_short(fd['kernel'])}")
            if verbose:
                out.append(d["diff"])
        for u in sc["unpaired"]:
            who = "only kdp" if u["kind"] == "missing-in-kernel" else "only the kernel"
            out.append(f"  ! {u['device']} {u['direction']}: {who} saw {u['summary']}")
            if verbose:
                out.append(f"      {u['frame']}")
        for o in sc["order"]:
            out.append(f"  ! {o['device']}: order: {o['problem']}")
    return "\n".join(out)
