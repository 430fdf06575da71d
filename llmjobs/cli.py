"""The ``llmjobs`` command: parse, call the controller, print. Exit codes: 0 ok, 1 run failed, 2 bad input.

Start-up is kept short: the controller, the registry (SQLAlchemy), the backends (submitit) and Rich's tables
are imported inside the commands that use them, so ``llmjobs --help`` loads typer and little else.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from llmjobs.errors import SchedulerError, UserError

app = typer.Typer(add_completion=False, pretty_exceptions_show_locals=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Run math-reasoning LLM jobs on clusters, with a registry that resumes.")
out = Console()
err = Console(stderr=True)

RegistryOpt = Annotated[str | None, typer.Option("--registry", help="SQLAlchemy URL; default "
                        "$LLMJOBS_REGISTRY or sqlite:///$LLMJOBS_HOME/registry.db", envvar="LLMJOBS_REGISTRY")]
DebugOpt = Annotated[bool, typer.Option("--debug", help="on an unexpected error, show the Python traceback",
                                        envvar="LLMJOBS_DEBUG")]


class _State:
    registry_url: str | None = None
    debug: bool = False


def _check_registry_url(url: str) -> None:
    """Refuse what SQLAlchemy would turn into a traceback or, for SQLite, silently into a new empty registry."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        raise UserError(f"registry URL {url!r} is not a SQLAlchemy URL; use sqlite:////abs/path/registry.db or "
                        "postgresql+psycopg://user@host/db") from None
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return
    folder = Path(parsed.database).expanduser().parent
    if not folder.is_dir():
        raise UserError(f"registry URL {parsed.render_as_string(hide_password=True)}: folder {folder} does not "
                        "exist; create it first (a registry URL never creates folders, so a typo cannot start a "
                        "new empty registry)")


def _controller(registry_url: str | None = None):
    return _controller_of(_registry(registry_url))


def _controller_of(reg):
    from llmjobs.cluster.controller import Controller

    return Controller(reg)


def _registry(registry_url: str | None = None):
    """The registry, opened (and migrated) with one clear line for what goes wrong; no controller, no
    backends: for the commands that only read it."""
    from sqlalchemy.exc import SQLAlchemyError

    from llmjobs.registry import Registry

    url = registry_url or _State.registry_url
    if url:
        _check_registry_url(url)
    try:
        return Registry(url)
    except SQLAlchemyError as e:
        from sqlalchemy.engine import make_url

        from llmjobs import settings

        shown = make_url(settings.registry_url(url)).render_as_string(hide_password=True)  # checked above
        cause = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise UserError(f"cannot open the registry {shown}: {cause}") from None
    except OSError as e:
        raise UserError(f"cannot open the registry: {e.strerror or e}: {e.filename or ''}".rstrip(": ")) from None


@app.callback()
def _main(registry: RegistryOpt = None, debug: DebugOpt = False) -> None:
    _State.registry_url = registry
    _State.debug = debug


def _view(reg, run_id: str) -> dict:
    """Everything about the run, as ``status --json`` prints it."""
    from llmjobs.views import run_view

    return run_view(reg, run_id)


def _summary(reg, run_id: str) -> dict:
    """What the status table shows: counts per step and the shards that need attention."""
    from llmjobs.views import run_summary

    return run_summary(reg, run_id)


def _latest_run_id(reg) -> str:
    from sqlalchemy import select

    from llmjobs.registry import Run

    with reg.read() as s:
        rid = s.scalar(select(Run.id).order_by(Run.created_at.desc()).limit(1))
    if rid is None:
        raise UserError("no runs yet; `llmjobs submit RECIPE` starts one")
    return rid


def _finished(reg, run_id: str) -> bool:
    from llmjobs.views import FINISHED

    with reg.read() as s:
        return reg.resolve_run(s, run_id).status in FINISHED


def _wait(ctl, run_id: str, quiet: bool = False) -> int:
    from llmjobs.tables import status_table

    if quiet or not out.is_terminal:
        last: dict = {}

        def tick() -> None:
            view = _summary(ctl.registry, run_id)
            now = {st["name"]: (st["status"], st["shards_done"]) for st in view["steps"]}
            for name, (status, done) in now.items():
                if last.get(name) != (status, done):
                    total = next(s["num_shards"] for s in view["steps"] if s["name"] == name)
                    err.print(f"{time.strftime('%H:%M:%S')} {name}: {status} ({done}/{total} shards)")
            last.update(now)

        status = ctl.wait(run_id, on_tick=tick)
    else:
        from rich.live import Live

        # transient: the live table is erased at the end, so exactly one table stays on the screen
        with Live(console=out, refresh_per_second=2, transient=True) as live:
            status = ctl.wait(run_id, on_tick=lambda: live.update(status_table(_summary(ctl.registry, run_id))))
    view = _summary(ctl.registry, run_id)
    (err if quiet or not out.is_terminal else out).print(status_table(view))
    return 0 if status == "succeeded" else 1


def _check_runs_dir(profile) -> None:
    """The profile's work_dir must be a folder this user can create runs in: checked before anything is
    recorded, so a bad work_dir never leaves a run whose folder cannot exist."""
    import tempfile

    runs = profile.runs_dir()
    where = f"work_dir {runs}" + (f" (cluster profile {profile.name!r})" if getattr(profile, "name", None) else "")
    try:
        runs.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.rmdir(tempfile.mkdtemp(prefix=".llmjobs-check-", dir=runs))
    except OSError as e:
        raise UserError(f"{where}: cannot create run folders there ({e.strerror or e}); set work_dir in the "
                        "cluster profile to a writable (shared) folder") from None


@app.command()
def submit(
    recipe: Annotated[Path, typer.Argument(help="recipe YAML")],
    cluster: Annotated[str | None, typer.Option("--cluster", "-c", help="profile name or YAML path")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override, e.g. steps.eval.params.samples=20")] = None,
    name: Annotated[str | None, typer.Option(help="run name (default: the recipe's)")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="follow the run until it ends; exit 1 if it fails")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print what would be submitted; record nothing")] = False,
) -> None:
    """Validate a recipe and submit every step; prints the run id."""
    from llmjobs.cluster.profiles import load_profile
    from llmjobs.recipes import check_run_name, load_recipe

    if name is not None:
        check_run_name(name)
    plan = load_recipe(recipe, set_ or [])
    profile = load_profile(cluster)
    if dry_run:  # touches no registry
        from llmjobs.cluster.controller import describe

        out.print(describe(plan, profile, name=name), markup=False, highlight=False, soft_wrap=True)
        return
    _check_runs_dir(profile)
    ctl = _controller()
    run_id = ctl.submit(plan, profile, name=name)
    print(run_id, flush=True)
    if wait:
        raise typer.Exit(_wait(ctl, run_id))


@app.command()
def status(
    run: Annotated[str | None, typer.Argument(help="run id or unique prefix; default: the latest run")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON object (every shard and attempt)")] = False,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="refresh until the run ends")] = False,
    shards: Annotated[bool, typer.Option("--shards", help="list every shard, not only those that need "
                                                          "attention")] = False,
) -> None:
    """Sync a run with its scheduler and show steps, shard counts, attempts, states and the shards that need
    attention (failed, cancelled, running)."""
    reg = _registry()
    run_id = run or _latest_run_id(reg)
    if watch and not as_json:
        raise typer.Exit(_wait(_controller_of(reg), run_id))
    if not _finished(reg, run_id):  # a finished run is never synced: the controller and backends stay unloaded
        _controller_of(reg).sync(run_id)
    if as_json:
        from llmjobs.views import write_json

        write_json(_view(reg, run_id), sys.stdout)
        return
    from llmjobs.tables import attention_table, shards_table, status_table

    view = _summary(reg, run_id)
    out.print(status_table(view))
    if shards:
        out.print(shards_table(_view(reg, run_id)))
    elif (t := attention_table(view)) is not None:
        out.print(t)


@app.command()
def runs(as_json: Annotated[bool, typer.Option("--json")] = False,
         limit: Annotated[int, typer.Option(help="newest N runs")] = 50) -> None:
    """List runs, newest first (registry state; `status RUN` syncs one)."""
    from llmjobs.tables import add_column, add_id_column, styled, table
    from llmjobs.views import runs_view

    rows = runs_view(_registry(), limit)
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    t = table()
    add_id_column(t, "id", [r["id"] for r in rows])
    for col in ("name", "status", "backend", "created"):
        add_column(t, col)
    for r in rows:
        t.add_row(r["id"], escape(r["name"]), styled(r["status"]), r["backend"], (r["created_at"] or "")[:19])
    out.print(t)


@app.command()
def logs(
    run: Annotated[str, typer.Argument(help="run id")],
    step: Annotated[str, typer.Argument(help="step name")],
    shard: Annotated[int, typer.Option(help="shard index")] = 0,
    attempt: Annotated[int | None, typer.Option(help="attempt number; default the latest")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="keep printing until the attempt ends")] = False,
) -> None:
    """Print a shard attempt's stdout and stderr."""
    ctl = _controller()
    view = _view(ctl.registry, run)
    st = next((s for s in view["steps"] if s["name"] == step), None)
    if st is None:
        raise UserError(f"run {view['id']} has no step {step!r}; steps: {', '.join(s['name'] for s in view['steps'])}")
    if not 0 <= shard < st["num_shards"]:
        raise UserError(f"step {step!r} has shards 0..{st['num_shards'] - 1}; no shard {shard}")
    attempts = st["shards"][shard]["attempts"]
    if not attempts:
        raise UserError(f"{step}[{shard}] has not been submitted yet (status {st['shards'][shard]['status']})")
    chosen = attempts[-1] if attempt is None else next((a for a in attempts if a["number"] == attempt), None)
    if chosen is None:
        raise UserError(f"{step}[{shard}] has attempts {', '.join(str(a['number']) for a in attempts)}; "
                        f"no attempt {attempt}")
    paths = [p for p in (chosen["stdout"], chosen["stderr"]) if p]
    offsets = dict.fromkeys(paths, 0)

    def dump(headers: bool) -> None:
        for p in paths:
            try:
                with open(p, "rb") as f:
                    f.seek(offsets[p])
                    data = f.read()
            except FileNotFoundError:
                continue
            if data:
                if headers:  # one line, however long the path: written as is, not wrapped by Rich
                    sys.stderr.write(f"==> {p} <==\n")
                    sys.stderr.flush()
                sys.stdout.write(data.decode(errors="replace"))
                sys.stdout.flush()
                offsets[p] += len(data)

    dump(headers=True)
    while follow:
        ctl.sync(view["id"], step=step, shard=shard)  # this shard only: cheap on a run of any size
        state = ctl.attempt_state(view["id"], step, shard, chosen["number"])
        dump(headers=False)
        if state not in ("submitting", "queued", "running"):
            break
        time.sleep(1)


@app.command()
def resume(
    run: Annotated[str, typer.Argument(help="run id")],
    wait: Annotated[bool, typer.Option("--wait", help="follow the run until it ends; exit 1 if it fails")] = False,
) -> None:
    """Resubmit what is not done (failed, cancelled, lost, never submitted); done shards are skipped."""
    ctl = _controller()
    queued = ctl.resume(run)
    view = _view(ctl.registry, run)
    if queued:
        err.print(f"resumed {view['id']}: {queued} job(s) queued")
    else:
        err.print(f"nothing to resume in {view['id']}: it is {view['status']}")
    if wait:
        raise typer.Exit(_wait(ctl, view["id"]))
    if not queued and view["status"] != "succeeded":
        raise typer.Exit(1)


@app.command()
def cancel(run: Annotated[str, typer.Argument(help="run id")],
           step: Annotated[str | None, typer.Argument(help="only this step")] = None) -> None:
    """Stop a run's (or one step's) queued and running jobs; `resume` continues later."""
    ctl = _controller()
    n = ctl.cancel(run, step)
    err.print(f"cancelled {n} job(s)")


@app.command("eval")
def eval_(
    model: Annotated[str, typer.Option(help="model directory (or a hub name already in the cache)")],
    data: Annotated[str, typer.Option(help="JSONL, JSON, TSV or a datasets directory")],
    samples: Annotated[int, typer.Option(help="samples per problem (N)")] = 16,
    adapter: Annotated[str | None, typer.Option(help="LoRA adapter directory")] = None,
    preset: Annotated[str | None, typer.Option(help="data preset: mgsm_ja, math500, gsm8k")] = None,
    template: Annotated[str | None, typer.Option(help="think_boxed, ja_instruction, or text with {problem}")] = None,
    temperature: Annotated[float | None, typer.Option()] = None,
    top_p: Annotated[float | None, typer.Option()] = None,
    max_tokens: Annotated[int | None, typer.Option()] = None,
    limit: Annotated[int | None, typer.Option(help="only the first N problems")] = None,
    engine: Annotated[str | None, typer.Option(help="vllm, hf or auto")] = None,
    cluster: Annotated[str | None, typer.Option("--cluster", "-c", help="profile name or YAML path")] = None,
    nodes: Annotated[int, typer.Option(help="nodes for the evaluation")] = 1,
    gpus_per_node: Annotated[int, typer.Option(help="GPUs per node")] = 0,
    walltime: Annotated[str | None, typer.Option(help="hours:minutes:seconds, days-hours[:minutes[:seconds]] or minutes")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override, e.g. steps.eval.params.seed=1")] = None,
    name: Annotated[str | None, typer.Option(help="run name")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="follow the run; print the report; exit 1 if it fails")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print what would be submitted")] = False,
) -> None:
    """Submit a one-step self-consistency evaluation (N samples per problem, majority vote); prints the run id."""
    from llmjobs.cluster.profiles import load_profile
    from llmjobs.jobs.eval.shortcut import eval_recipe
    from llmjobs.recipes import plan_from_dict

    recipe = eval_recipe(model, data, samples, adapter=adapter, preset=preset, nodes=nodes,
                         gpus_per_node=gpus_per_node, walltime=walltime, name=name, template=template,
                         temperature=temperature, top_p=top_p, max_tokens=max_tokens, limit=limit, engine=engine)
    plan = plan_from_dict(recipe, "llmjobs eval", set_ or [])
    profile = load_profile(cluster)
    if dry_run:
        from llmjobs.cluster.controller import describe

        out.print(describe(plan, profile), markup=False, highlight=False, soft_wrap=True)
        return
    _check_runs_dir(profile)
    ctl = _controller()
    run_id = ctl.submit(plan, profile)
    print(run_id, flush=True)
    if wait:
        code = _wait(ctl, run_id)
        if code == 0:
            report(run_id)
        raise typer.Exit(code)


@app.command()
def report(target: Annotated[str, typer.Argument(help="run id (its eval steps' results), or a results.json / "
                                                      "report directory")]) -> None:
    """Print the summary table of an evaluation."""
    from llmjobs.jobs.eval.cli import print_summary
    from llmjobs.jobs.eval.report import load_results

    path = Path(target)
    if path.exists():
        paths = [path]
    else:
        view = _view(_registry(), target)
        evals = [s for s in view["steps"] if s["kind"].startswith("eval.")]
        if not evals:
            raise UserError(f"run {view['id']} has no evaluation step")
        paths = [Path(s["output"]) / "results.json" for s in evals]
        missing = [str(p) for p, s in zip(paths, evals) if not p.exists()]
        if missing:
            raise UserError(f"no results yet ({', '.join(missing)}); the step is {evals[0]['status']}")
    for p in paths:
        print_summary(load_results(p), title=str(p))


@app.command()
def compare(
    targets: Annotated[list[str], typer.Argument(help="runs (their evaluation steps), RUN:STEP, or results.json "
                                                      "files / report directories")],
    as_json: Annotated[bool, typer.Option("--json", help="print one JSON list (fractions, maj@k curves)")] = False,
    plot: Annotated[Path | None, typer.Option(help="where to write the maj@k plot")] = Path("compare.png"),
    no_plot: Annotated[bool, typer.Option("--no-plot", help="write no plot")] = False,
) -> None:
    """Evaluation results side by side (mean@1, maj@N, pass@N, unclosed </think>, per category), and the
    maj@k curves of all of them in one plot."""
    from llmjobs.jobs.eval.compare import category_rows, resolve, summary, table_rows, write_plot
    from llmjobs.tables import add_column, table

    reg = None

    def lookup(ref: str) -> dict:
        nonlocal reg
        from llmjobs.views import run_summary

        reg = reg or _registry()
        return run_summary(reg, ref, limit=0)

    rows = [summary(e) for e in resolve(targets, lookup)]
    if as_json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
    else:
        t = table(title="evaluations side by side", title_justify="left")
        add_column(t, "metric")
        for r in rows:
            t.add_column(escape(r["label"]), justify="right", overflow="fold")
        for label, values in table_rows(rows):
            t.add_row(label, *values)
        out.print(t)
        if cats := category_rows(rows):
            ct = table(title="per category: maj@N / mean@1", title_justify="left")
            add_column(ct, "category")
            for r in rows:
                ct.add_column(escape(r["label"]), justify="right", overflow="fold")
            for cat, values in cats:
                ct.add_row(escape(cat), *values)
            out.print(ct)
    if plot is not None and not no_plot:
        try:
            write_plot(rows, plot)
        except ImportError as e:
            err.print(f"no plot: {e.name} is not installed (pip install 'llmjobs[eval]')", markup=False)
            return
        err.print(f"maj@k plot: {plot}", markup=False, highlight=False, soft_wrap=True)


@app.command()
def kinds() -> None:
    """List the step kinds this installation knows."""
    from llmjobs import jobs
    from llmjobs.tables import add_column, table

    t = table()
    add_column(t, "kind")
    add_column(t, "what it does")
    for k in sorted(jobs.kinds().values(), key=lambda k: k.name):
        t.add_row(k.name, k.summary)
    out.print(t)


def _mount_evaluation() -> None:
    from llmjobs.jobs.eval import cli as eval_cli  # imports only typer: the heavy parts load inside

    app.command("grade")(eval_cli.grade)


_mount_evaluation()


def _say(label: str, message: object) -> None:
    """One message on stderr; its text is printed as is (no Rich markup: ``llmjobs[postgres]`` survives)."""
    err.print(Text(label, style="red") + Text(str(message)), highlight=False, soft_wrap=True)


def _cause(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        where = f": {e.filename}" if e.filename else ""
        return f"{e.strerror}{where}"
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0]}" if text else type(e).__name__


def main() -> None:
    # Run folders, job pickles and gate files hold the profile's environment (tokens): private to the user.
    os.umask(0o077)
    debug = "--debug" in sys.argv[1:] or os.environ.get("LLMJOBS_DEBUG", "").lower() in ("1", "true", "yes")
    try:
        from llmjobs.fast_status import try_status

        if (code := try_status(sys.argv[1:])) is not None:  # a finished run on SQLite: no SQLAlchemy, no sync
            sys.exit(code)
        app(standalone_mode=True)
    except UserError as e:
        _say("error: ", e)
        sys.exit(2)
    except SchedulerError as e:
        if debug or _State.debug:
            raise
        _say("scheduler error: ", e)
        sys.exit(1)
    except (SystemExit, KeyboardInterrupt):
        raise
    except RecursionError:
        if debug or _State.debug:
            raise
        _say("error: ", "input nested too deeply to process")
        sys.exit(2)
    except Exception as e:  # every unexpected failure is one line; --debug shows the traceback
        if debug or _State.debug:
            raise
        _say("error: ", f"{_cause(e)} (run with --debug for the traceback)")
        sys.exit(1)


if __name__ == "__main__":
    main()
