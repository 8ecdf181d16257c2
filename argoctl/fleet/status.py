"""`argoctl fleet status`: the fleet as this host's daemon sees it, from the state
file it keeps (`argoctl run` with [fleet]): members, their health and versions,
the bus, and for one destination which host reaches it and how."""

from __future__ import annotations

from typing import Optional

from rich.console import Console
from rich.table import Table


def _ms(v) -> str:
    return "-" if v is None else f"{v:.1f}"


def render(doc: dict, dest: Optional[str] = None, console: Optional[Console] = None) -> None:
    console = console or Console()
    f = doc["fleet"]
    b = f["bus"]
    stale = " (daemon not running: last known state)" if doc.get("stale") else ""
    console.print(f"[bold]{doc['node']}[/bold]: fleet mode [bold]{f['mode']}[/bold] for "
                  f"{f['since_s']:.0f} s: {f['reason']}{stale}")
    console.print(f"bus: {b['state']} {b['server'] or ''}  updates {b['updates']}  writes "
                  f"{b['writes']} ({b['write_errors']} failed)  rejected "
                  + ", ".join(f"{k} {v}" for k, v in f["ingest"]["rejected"].items() if v)
                  + ("" if any(f["ingest"]["rejected"].values()) else "none"))
    if dest is None:
        t = Table(title="members")
        for col in ("host", "role", "version", "health", "underlay", "tunnel", "peers"):
            t.add_column(col)
        for host, m in f["members"].items():
            health = (f"[green]ok[/green] {m['age_s']:.1f}s" if m["healthy"]
                      else f"[red]expired[/red] {m['age_s']:.0f}s")
            t.add_row(host, m["role"], m["version"], health, ", ".join(m["underlay"]),
                      m["tunnel_address"] or "-", ", ".join(m["peers"]))
        console.print(t)
        return
    t = Table(title=f"who reaches {dest}")
    for col in ("host", "how", "state", "rtt ms", "loss", "age s"):
        t.add_column(col)
    for host, r in f["reach"].get(dest, {}).items():
        t.add_row(host, r["how"], r["state"], _ms(r["rtt_ms"]), f"{r['loss']:.0%}",
                  f"{r['age_s']:.1f}")
    console.print(t)
    t = Table(title=f"{doc['node']} -> {dest} (ms; composed = relay's leg + hop + overhead)")
    for col in ("path", "how", "state", "tier", "score", "leg", "hop", "ovh", "every", ""):
        t.add_column(col)
    for p, r in f["paths"].get(dest, {}).items():
        pace = r.get("pace")
        t.add_row(p, r["how"], r["state"] or "-", r["tier"] or "-", _ms(r["score_ms"]),
                  _ms(r.get("leg_rtt_ms")), _ms(r.get("hop_rtt_ms")), _ms(r.get("overhead_ms")),
                  "-" if pace is None else f"{pace}x",
                  "[bold]*[/bold]" if r["chosen"] else "")
    console.print(t)
