"""``llmjobs grade`` and ``llmjobs report`` command functions, for the main CLI to mount.

Kept light: math-verify, matplotlib and the grading modules are imported inside the commands.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Grade samples and show evaluation reports.", no_args_is_help=True)


@app.command("grade")
def grade(
    samples: Annotated[Path, typer.Argument(help="samples JSONL: one line per sample; lines with one id are one problem")],
    id_field: Annotated[str, typer.Option("--id-field", help="field holding the problem id")] = "id",
    gold_field: Annotated[str, typer.Option("--gold-field", help="field holding the gold answer")] = "answer",
    output_field: Annotated[str, typer.Option("--output-field", help="field holding the model output")] = "output",
    category_field: Annotated[str | None, typer.Option("--category-field", help="field holding the category")] = None,
    tokens_field: Annotated[str, typer.Option("--tokens-field", help="field holding the output token count")] = "tokens",
    out: Annotated[Path | None, typer.Option("--out", help="report directory (default: SAMPLES.graded/ beside it)")] = None,
    data: Annotated[Path | None, typer.Option("--data", help="take golds and categories from this data file")] = None,
    preset: Annotated[str | None, typer.Option("--preset", help="preset for --data: mgsm_ja, math500, gsm8k")] = None,
    unclosed: Annotated[str, typer.Option(
        "--unclosed", help="outputs whose <think> never closes: count_wrong or grade_reasoning")] = "count_wrong",
    workers: Annotated[int | None, typer.Option("--workers", help="grading processes (default: CPU count)")] = None,
    timeout: Annotated[float, typer.Option("--timeout", help="seconds math-verify may spend on one answer")] = 5.0,
) -> None:
    """Grade, vote and report samples that already exist (from llmjobs or any other tool)."""
    from llmjobs.jobs.eval.score import grade_file

    out_dir = out if out is not None else samples.with_name(samples.stem + ".graded")
    results = grade_file(
        samples, out_dir, data=data, preset=preset, id_field=id_field, gold_field=gold_field,
        output_field=output_field, category_field=category_field, tokens_field=tokens_field,
        unclosed=unclosed, workers=workers, timeout_s=timeout,  # type: ignore[arg-type]
    )
    print_summary(results, title=str(out_dir / "results.json"))


@app.command("report")
def report(results: Annotated[Path, typer.Argument(help="results.json (or the directory holding it)")]) -> None:
    """Print the summary table of an evaluation."""
    from llmjobs.jobs.eval.report import load_results

    print_summary(load_results(results), title=str(results))


def print_summary(results: dict, title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    from llmjobs.jobs.eval.report import summary_rows

    console = Console()
    table = Table(title=title, show_header=False)
    table.add_column("metric")
    table.add_column("value", justify="right")
    for label, value in summary_rows(results):
        table.add_row(label, value)
    console.print(table)
    cats = results.get("per_category") or {}
    if cats:
        n = results["samples_per_problem"]
        ct = Table(title="per category")
        for col in ("category", "problems", f"maj@{n}", "mean@1"):
            ct.add_column(col, justify="left" if col == "category" else "right")
        for cat, c in cats.items():
            ct.add_row(cat, str(c["problems"]), f"{100 * c['majority_accuracy']:.1f}%", f"{100 * c['mean_at_1']:.1f}%")
        console.print(ct)
