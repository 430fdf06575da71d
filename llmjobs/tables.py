"""The Rich tables of ``status`` and ``runs``, shared by the CLI and ``llmjobs.fast_status`` (which shows a
finished run without importing typer or SQLAlchemy): Rich only."""

from __future__ import annotations

from rich.markup import escape
from rich.table import Table

from llmjobs.views import fmt_seconds

STATUS_STYLE = {"succeeded": "green", "failed": "red", "cancelled": "yellow", "running": "cyan",
                "queued": "blue", "pending": "dim"}


def table(**kwargs) -> Table:
    """A Rich table for this CLI: other columns fold to make room, run ids (what users copy) never do."""
    return Table(**kwargs)


def add_column(t: Table, header: str) -> None:
    t.add_column(header, overflow="fold")


def add_id_column(t: Table, header: str, values: list[str]) -> None:
    """A column of run ids: as wide as the longest, never wrapped or cut with an ellipsis."""
    t.add_column(header, no_wrap=True, overflow="ignore", min_width=max([len(header), *map(len, values)]))


def styled(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]"


def status_table(view: dict) -> Table:
    """One row per step: counts, not shards (a step may have thousands)."""
    t = table(title=f"run {view['id']} ({view['name']}): {styled(view['status'])}  [dim]{view['run_dir']}[/]",
              title_justify="left")
    for col in ("step", "kind", "status", "shards", "attempts", "elapsed", "last problem"):
        add_column(t, col)
    for st in view["steps"]:
        others = [f"{n} {styled(k)}" for k, n in st["counts"].items() if k not in ("succeeded",)]
        shards = f"{st['shards_done']}/{st['num_shards']}" + (f" ({', '.join(others)})" if others else "")
        problems = [f"[{sh['index']}] {sh['attempt']['reason']}" for sh in st.get("attention", [])
                    if sh["attempt"]["state"] in ("failed", "cancelled", "lost") and sh["attempt"]["reason"]]
        t.add_row(st["name"], st["kind"], styled(st["status"]), shards, str(st["attempts"]),
                  fmt_seconds(st["elapsed_s"]), escape(problems[-1]) if problems else "")
    return t


def attention_table(view: dict) -> Table | None:
    """The shards that need a look (failed, cancelled, running), a bounded number per step."""
    rows = [(st, sh) for st in view["steps"] for sh in st["attention"]]
    if not rows:
        return None
    t = table(title="shards that need attention (`status --shards` lists all)", title_justify="left")
    for col in ("shard", "status", "attempt", "state", "exit", "job", "reason"):
        t.add_column(col)
    for st, sh in rows:
        a = sh["attempt"]
        t.add_row(f"{st['name']}[{sh['index']}]", styled(sh["status"]), str(a["number"]), a["state"],
                  "" if a["exit_code"] is None else str(a["exit_code"]), a["job_id"] or "",
                  escape(a["reason"] or ""))
    more = [f"{st['name']}: {st['attention_total'] - len(st['attention'])} more" for st in view["steps"]
            if st["attention_total"] > len(st["attention"])]
    if more:
        t.caption = "; ".join(more)
    return t


def shards_table(view: dict) -> Table:
    """Every shard with its latest attempt (``status --shards``)."""
    t = table(title=f"run {view['id']}: every shard", title_justify="left")
    for col in ("shard", "status", "attempts", "state", "exit", "job", "nodes", "reason"):
        t.add_column(col)
    for st in view["steps"]:
        for sh in st["shards"]:
            a = sh["attempts"][-1] if sh["attempts"] else None
            t.add_row(f"{st['name']}[{sh['index']}]", styled(sh["status"]), str(len(sh["attempts"])),
                      a["state"] if a else "", "" if not a or a["exit_code"] is None else str(a["exit_code"]),
                      (a["job_id"] or "") if a else "", (a["nodes"] or "") if a else "",
                      escape((a["reason"] or "") if a else ""))
    return t
