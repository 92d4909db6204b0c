"""The commands that work with artifacts: run, bench, verify, inspect; and build from a config file.

Plain functions; ``infer_compile.app.cli`` registers them on its typer app. Every command works
for any target: artifacts load through ``targets.load_artifact`` and run through their ``Runner``.
Heavy modules are imported inside the commands so `infer-compile --help` stays fast.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import JustifyMethod
from rich.markup import escape
from rich.table import Table

from infer_compile.app.terminal import console, err_console, shown_path, user_errors
from infer_compile.core.errors import AccuracyError, UserInputError

if TYPE_CHECKING:
    from rich.progress import Progress

    from infer_compile.app.build_config import Job, JobOutcome
    from infer_compile.app.verification import Verification
    from infer_compile.core.numerics import Feeds
    from infer_compile.targets import Runner

InputOption = Annotated[list[str] | None, typer.Option(
    "--input", "-i", help="Input data: x.npy (next input in order), NAME=x.npy or inputs.npz (repeatable). "
    "Default: seeded random inputs.", show_default=False)]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed for the random inputs.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON document instead of tables.")]
DebugOption = Annotated[bool, typer.Option("--debug", help="Show tracebacks.")]
ArtifactArgument = Annotated[Path, typer.Argument(help="An artifact infer-compile built (any target).",
                                                  show_default=False)]


def model_feeds(runner: Runner, inputs: list[str] | None, seed: int, batch: int | None = None) -> Feeds:
    """Feeds from --input files, else seeded random inputs (at ``batch`` for a dynamic batch dim)."""
    from infer_compile.app.benchmark import with_batch
    from infer_compile.core.feeds import parse_inputs
    from infer_compile.core.numerics import random_inputs

    if inputs:
        if batch is not None:
            raise UserInputError("--batch-size applies to random inputs, not to --input files",
                                 hint="drop --batch-size; the files' first dimension is the batch")
        return parse_inputs(inputs, runner.inputs)
    return random_inputs(with_batch(runner.inputs, batch), seed=seed)


def print_json(document: dict[str, Any]) -> None:
    typer.echo(json.dumps(document, indent=2, default=str))


def progress_bar() -> Progress:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    console=err_console, transient=True, disable=not err_console.is_terminal)


def run_command(
    artifact: ArtifactArgument,
    input: InputOption = None,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the outputs here (.npz).")] = None,
    seed: SeedOption = 0,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Batch of the random inputs.")] = None,
    debug: DebugOption = False,
) -> None:
    """Run ARTIFACT once on inputs and print (and save) its outputs."""
    import numpy as np

    from infer_compile.core.feeds import save_outputs
    from infer_compile.targets import load_artifact

    with user_errors(debug):
        if output is not None and output.suffix != ".npz":
            raise UserInputError(f"--output {output}: outputs are written as .npz", hint="name it e.g. out.npz")
        runner = load_artifact(artifact)
        if not input:
            err_console.print(f"no --input given: running on random inputs (seed {seed})")
        outputs = runner.run(model_feeds(runner, input, seed, batch_size))
        table = Table(show_edge=False)
        for col in ("output", "shape", "dtype", "min", "max", "mean"):
            table.add_column(col)
        for name, value in outputs.items():
            value = np.asarray(value)
            numeric = value.size and np.issubdtype(value.dtype, np.number)
            stats = [f"{float(f(value)):.6g}" for f in (np.min, np.max, np.mean)] if numeric else ["-"] * 3
            table.add_row(name, "x".join(map(str, value.shape)) or "scalar", value.dtype.name, *stats)
        console.print(table)
        if output is not None:
            save_outputs(outputs, output)
            console.print(f"wrote {escape(str(output))}", highlight=False, soft_wrap=True)


def bench_command(
    artifact: ArtifactArgument,
    vs: Annotated[Path | None, typer.Option("--vs", help="Another artifact to run alternately and compare.")]
    = None,
    batch_size: Annotated[list[int] | None, typer.Option(
        "--batch-size", "-b", help="Batch size (repeatable) \\[default: the artifact's own].", show_default=False)]
    = None,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed runs first.")] = 10,
    iterations: Annotated[int, typer.Option("--iterations", "-n", min=1, help="Timed runs per artifact.")] = 100,
    input: InputOption = None,
    seed: SeedOption = 0,
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Measure latency (p50/p90/p99) and throughput of ARTIFACT, optionally against --vs OTHER."""
    from infer_compile.app.benchmark import BENCH_SCHEMA, measure
    from infer_compile.targets import load_artifact

    with user_errors(debug):
        paths = [artifact] + ([vs] if vs else [])
        labels = [str(p) for p in paths]
        if len(set(labels)) < len(labels):
            labels = ["A: " + labels[0], "B: " + labels[1]]
        runners = {label: load_artifact(path) for label, path in zip(labels, paths, strict=True)}
        batches: list[int] | list[None] = batch_size or [None]
        timings = []
        with progress_bar() as progress:
            task = progress.add_task("benchmarking", total=len(batches) * iterations * len(runners))
            for batch in batches:
                plan = {label: (runner, model_feeds(runner, input, seed, batch)) for label, runner in runners.items()}
                timings += measure(plan, warmup=warmup, iterations=iterations, tick=lambda: progress.advance(task))
        results = [t.to_json() for t in timings]
        ratios = [bench_ratio(results[i], results[i + 1]) for i in range(0, len(results), 2)] if vs else []
        if json_output:
            print_json({"schema": BENCH_SCHEMA, "warmup": warmup, "results": results, "ratios": ratios})
            return
        print_bench(results, ratios)


def bench_ratio(first: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """How much faster ``first`` is than ``other`` (> 1: faster), by median latency and by throughput."""
    return {"batch": first["batch"], "artifact": first["artifact"], "vs": other["artifact"],
            "p50_speedup": other["latency_ms"]["p50"] / first["latency_ms"]["p50"],
            "throughput_ratio": first["throughput"] / other["throughput"]}


def print_bench(results: list[dict[str, Any]], ratios: list[dict[str, Any]]) -> None:
    table = Table(show_edge=False)
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("artifact", "left"), ("batch", "right"), ("runs", "right"), ("p50 ms", "right"), ("p90 ms", "right"),
        ("p99 ms", "right"), ("mean ms", "right"), ("samples/s", "right"))
    for col, justify in columns:
        table.add_column(col, justify=justify, overflow="fold")  # fold: paths stay whole and copyable
    for r in results:
        ms = r["latency_ms"]
        table.add_row(escape(r["artifact"]), str(r["batch"]), str(r["iterations"]),
                      *(f"{ms[k]:.3f}" for k in ("p50", "p90", "p99", "mean")), f"{r['throughput']:.1f}")
    console.print(table)
    for ratio in ratios:
        console.print(f"batch {ratio['batch']}: {escape(ratio['artifact'])} is {ratio['p50_speedup']:.2f}x "
                      f"the speed of {escape(ratio['vs'])} (p50 latency; throughput ratio "
                      f"{ratio['throughput_ratio']:.2f}x)", highlight=False, soft_wrap=True)


def verify_command(
    source: Annotated[Path | None, typer.Argument(
        help="The source model the artifact was built from (omit it with --from-python).", show_default=False)]
    = None,
    artifact: Annotated[Path | None, typer.Argument(help="An artifact infer-compile built (any target).",
                                                    show_default=False)] = None,
    samples: Annotated[int, typer.Option("--samples", "-n", min=1, help="Random input samples to compare on.")]
    = 8,
    input: InputOption = None,
    seed: SeedOption = 0,
    budget: Annotated[str | None, typer.Option(
        "--budget", help="Accuracy budget, e.g. 'cosine>=0.999' or 'top1-agreement>=0.99,max-abs<=0.05' "
        "[default: the artifact precision's tolerance].", show_default=False)] = None,
    json_output: JsonOption = False,
    debug: DebugOption = False,
    **declared: object,  # the source options compile takes, one flag each (cli.with_declared_options)
) -> None:
    """Compare ARTIFACT's outputs with SOURCE's on the same inputs; exit 3 when outside the budget.

    Source options not given (input shapes and dtypes, the exporter) are the ones the artifact's manifest records.
    """
    from infer_compile.app.settings import sort_options
    from infer_compile.app.verification import source_options_for, verify
    from infer_compile.core.budget import parse_budget
    from infer_compile.core.feeds import parse_inputs
    from infer_compile.core.manifest import read_manifest
    from infer_compile.frontends import load_source
    from infer_compile.frontends.specs import model_source
    from infer_compile.targets import load_artifact

    with user_errors(debug):
        parsed = parse_budget(budget) if budget else None  # a typo fails before any work
        given_options = sort_options(declared, spelling=lambda option: option.cli_flag).source
        if artifact is None and given_options.get("python_entry"):  # verify ARTIFACT --from-python pkg.mod:build
            source, artifact = None, source
        if artifact is None:
            raise UserInputError("verify needs SOURCE and ARTIFACT", hint="infer-compile verify model.pt model.onnx "
                                 "(or infer-compile verify model.onnx --from-python pkg.mod:build)")
        runner = load_artifact(artifact)
        options = source_options_for(given_options, read_manifest(artifact))
        model = load_source(model_source(source, options.python_entry), options).model
        given = [parse_inputs(input, model.inputs)] if input else None
        result = verify(model, runner, samples=samples, seed=seed, given=given)
        if json_output:
            print_json({"schema": "infer-compile.verify/1", "budget": budget, **result.to_json()})
        else:
            print_verification(result)
        if parsed is not None:
            failures = parsed.check(result.figures)
            if failures:
                raise AccuracyError(f"accuracy budget '{parsed}' not met: {'; '.join(failures)}",
                                    hint="rebuild at a higher precision, or relax --budget if this is acceptable")
        else:
            check_tolerance(result, judged_precision(artifact))
        if not json_output:
            console.print("[green]verified[/]" + (f": within budget '{parsed}'" if parsed else ""), highlight=False)


def judged_precision(artifact: Path) -> str:
    """The precision whose tolerance ``artifact`` is judged by, as the build's final check judged it."""
    from infer_compile.targets import target_for_artifact

    target, manifest = target_for_artifact(artifact)
    return target.check_precision(manifest) if manifest else "fp32"


def check_tolerance(result: Verification, precision: str) -> None:
    from infer_compile.core.numerics import TOLERANCES, out_of_tolerance

    failures = out_of_tolerance(result.comparisons, TOLERANCES[precision])
    if failures:
        raise AccuracyError(f"outputs differ beyond the {precision} tolerance: {failures[0]}",
                            hint="give an explicit --budget such as 'cosine>=0.999' to judge by your own bar")


def print_verification(result: Verification) -> None:
    table = Table(title=f"{result.samples} sample(s)", title_justify="left", show_edge=False)
    for col in ("output", "max abs", "max rel", "cosine", "top-1 agreement"):
        table.add_column(col, justify="left" if col == "output" else "right")
    for c in result.comparisons:
        top1 = "-" if c.top1_agreement is None else f"{c.top1_agreement:.4f}"
        table.add_row(escape(c.name), f"{c.max_abs:.3g}", f"{c.max_rel:.3g}", f"{c.cosine:.7f}", top1)
    console.print(table)


def inspect_command(
    path: Annotated[Path, typer.Argument(help="A model or an artifact.", show_default=False)],
    json_output: JsonOption = False,
    debug: DebugOption = False,
) -> None:
    """Show inputs/outputs, op histogram, parameter count, precision breakdown and manifest."""
    from infer_compile.app.inspection import inspect_path

    with user_errors(debug):
        info = inspect_path(path)
        if json_output:
            print_json(info)
            return
        print_inspection(info)


def print_inspection(info: dict[str, Any]) -> None:
    console.print(f"[bold]{info['kind']}[/] {escape(info['path'])}", highlight=False, soft_wrap=True)
    io = Table(show_edge=False)
    for col in ("", "name", "dtype", "shape"):
        io.add_column(col)
    for kind in ("inputs", "outputs"):
        for spec in info[kind]:
            shape = "?" if spec["shape"] is None else "x".join("?" if d is None else str(d) for d in spec["shape"])
            io.add_row(kind[:-1], escape(spec["name"]), spec["dtype"], shape)
    console.print(io)
    if "ops" in info:
        ops = Table(show_edge=False, title=f"{info['nodes']} nodes, opset {info['opset']}", title_justify="left")
        ops.add_column("op")
        ops.add_column("count", justify="right")
        for op, count in info["ops"].items():
            ops.add_row(op, str(count))
        console.print(ops)
        precision = info["precision"]
        by_dtype = ", ".join(f"{k} {v:,}" for k, v in precision["parameters_by_dtype"].items()) or "-"
        console.print(f"[bold]parameters[/] {info['parameters']:,} ({by_dtype}); quantized ops: "
                      f"{precision['quantized_ops']}", highlight=False)
    if "manifest" in info:
        from infer_compile.core.manifest import Manifest

        manifest = Manifest.from_json(info["manifest"])  # inspect_path checked it
        source = manifest.build.source
        lines = {
            "target": manifest.target, "precision": manifest.precision,
            "source": f"{source.get('path')} ({source.get('format')}, sha256 {str(source.get('sha256'))[:12]})",
            "passes": ", ".join(manifest.build.passes) or "-",
            "files": ", ".join(manifest.artifact.files if manifest.artifact else []),
            "tools": ", ".join(f"{k} {v}" for k, v in manifest.build.tool_versions.items()),
        }
        for key, value in lines.items():
            console.print(f"[bold]{key:<9}[/] {escape(str(value))}", highlight=False, soft_wrap=True)


def triton_command(
    artifact: ArtifactArgument,
    repo: Annotated[Path, typer.Option("--repo", help="The Triton model repository (created if missing).",
                                       show_default=False)],
    name: Annotated[str | None, typer.Option(
        "--name", help="Model name in the repository \\[default: the artifact's file name].", show_default=False)]
    = None,
    version: Annotated[int | None, typer.Option(
        "--version", help="Version number \\[default: the highest there + 1].", show_default=False)] = None,
    debug: DebugOption = False,
) -> None:
    """Put ARTIFACT into a Triton model repository: REPO/NAME/VERSION/model.* and REPO/NAME/config.pbtxt."""
    from infer_compile.app.triton import write_model

    with user_errors(debug):
        print_triton(write_model(artifact, repo, name, version))


def print_overlay(artifact: Path, overlay: Path) -> None:
    """The command that opens the artifact in Model Explorer with the report's per-node overlay."""
    console.print(f"[bold]{'explore':<11}[/] pip install ai-edge-model-explorer; model-explorer "
                  f"{escape(shown_path(artifact))} --node_data_paths={escape(shown_path(overlay))}", soft_wrap=True,
                  highlight=False)


def report_command(
    report: Annotated[Path, typer.Argument(help="A build report (JSON) that --report wrote.", show_default=False)],
    html: Annotated[bool, typer.Option("--html", help="Render it as a self-contained HTML page.")] = False,
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="The page \\[default: REPORT with .html].", show_default=False)] = None,
    artifact: Annotated[Path | None, typer.Option(
        "--artifact", help="The artifact, for the Model Explorer command \\[default: the report's].",
        show_default=False)] = None,
    debug: DebugOption = False,
) -> None:
    """Render a build report: `infer-compile report build.json --html` writes build.html (no server needed)."""
    with user_errors(debug) as outcome:
        from infer_compile.app.html_report import check_html_path, write_html
        from infer_compile.app.report import REPORT_SCHEMA
        from infer_compile.core.artifacts import read_own_json

        if not html:
            raise UserInputError("say what to render: --html", hint=f"infer-compile report {report} --html")
        if not report.is_file():
            raise UserInputError(f"{report}: no such report", hint="write one with compile --report build.json")
        document = read_own_json(report, "report", REPORT_SCHEMA)
        page = output or report.with_suffix(".html")
        check_html_path(page)
        assert document is not None
        overlay = write_html(document, page)
        outcome.written.append(page)
        console.print(f"[bold]{'report':<11}[/] {escape(shown_path(page))}", soft_wrap=True, highlight=False)
        if overlay is not None:
            print_overlay(artifact or Path(document["artifact"]["path"]), overlay)


def print_triton(version_dir: Path) -> None:
    console.print(f"[bold]{'triton':<11}[/] {escape(str(version_dir))} (config: "
                  f"{escape(str(version_dir.parent / 'config.pbtxt'))})", soft_wrap=True, highlight=False)


def build_command(
    config: Annotated[Path, typer.Option("--config", "-c", help="The build config (TOML).")] = Path("infer.toml"),
    jobs: Annotated[int | None, typer.Option("--jobs", "-j", min=1, show_default=False,
                                             help="Builds to run at once \\[default: CPU count].")] = None,
    cache_dir: Annotated[str | None, typer.Option(
        "--cache-dir", help="Build cache: a folder, or an object store URL (s3://bucket/cache) "
                            "\\[default: $INFER_COMPILE_CACHE_DIR or ~/.cache/infer-compile].", show_default=False)]
    = None,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Build without reading or writing the cache.")]
    = False,
    report: Annotated[Path | None, typer.Option("--report", help="Write every job's build report here (JSON).")]
    = None,
    only: Annotated[list[str] | None, typer.Option(
        "--only", metavar="JOB", help="Build only this job, MODEL/TARGET/PRECISION (repeatable; * and ? match "
                                      "like a shell: 'resnet/*/int8').")] = None,
    shard: Annotated[str | None, typer.Option(
        "--shard", metavar="I/N", help="Build the I-th of N equal shares of the jobs (1 <= I <= N): N CI runners "
                                       "take one share each.")] = None,
    list_jobs: Annotated[bool, typer.Option(
        "--list-jobs", help="List the jobs (after --only/--shard) instead of building them.")] = False,
    as_json: Annotated[bool, typer.Option(
        "--json", help="With --list-jobs: a job matrix for CI ({\"include\": [{\"job\": ..., \"model\": ...}]}, "
                       "GitHub Actions' strategy.matrix).")] = False,
    debug: DebugOption = False,
) -> None:
    """Build every model x target x precision in a config file, in parallel; one summary table."""
    with user_errors(debug) as outcome:  # imports included: a signal during them is handled too
        from infer_compile.app.build_config import (
            MATRIX_SCHEMA,
            exit_code,
            load_config,
            run_jobs,
            select_jobs,
        )
        from infer_compile.app.outputs import check_report_path
        from infer_compile.core.artifacts import atomic_write_text

        if as_json and not list_jobs:
            raise UserInputError("--json lists jobs: it needs --list-jobs", hint="add --list-jobs, or drop --json")
        overrides = {"cache": False} if no_cache else {"cache_dir": cache_dir} if cache_dir else {}
        job_list = select_jobs(load_config(config, overrides), only or [], shard)
        if list_jobs:
            print_jobs(job_list, as_json)
            return
        if report:
            check_report_path(report, MATRIX_SCHEMA)
        workers = jobs or os.cpu_count() or 1
        err_console.print(f"{len(job_list)} job(s) from {escape(str(config))}, up to {workers} at a time",
                          highlight=False)
        with progress_bar() as progress:
            task = progress.add_task("building", total=len(job_list))

            def done(o: JobOutcome) -> None:
                progress.advance(task)
                if o.status != "failed":
                    outcome.written.append(o.job.output)

            outcomes = run_jobs(job_list, workers, done=done)
        table = Table(show_edge=False)
        for col in ("model", "target", "precision", "status", "time", "artifact"):
            table.add_column(col, justify="right" if col == "time" else "left", overflow="fold")
        for o in outcomes:
            status = {"failed": "[red]FAILED[/]", "cached": "[green]cached[/]"}.get(o.status, "[green]built[/]")
            table.add_row(escape(o.job.model), o.job.target, o.job.precision, status, f"{o.seconds:.2f} s",
                          escape(shown_path(o.job.output)))
        console.print(table)
        if report:
            atomic_write_text(report, json.dumps({"schema": MATRIX_SCHEMA, "config": str(config),
                                                  "jobs": [o.to_json() for o in outcomes]}, indent=2,
                                                 default=str) + "\n")
        failed = [o for o in outcomes if o.status == "failed"]
        for o in failed:
            err_console.print(f"[bold red]error:[/] {escape(o.job.label)}: {escape(o.error)}", highlight=False,
                              soft_wrap=True)
            if o.hint:
                err_console.print(f"  hint: {escape(o.hint)}", highlight=False, soft_wrap=True)
        serve_built(outcomes)
        if failed:
            err_console.print(f"{len(failed)} of {len(outcomes)} job(s) failed", highlight=False)
            raise typer.Exit(exit_code(outcomes))


def print_jobs(jobs: list[Job], as_json: bool) -> None:
    """The selected jobs: a CI job matrix as one JSON line, or a table."""
    from infer_compile.app.build_config import job_matrix

    if as_json:
        print(json.dumps(job_matrix(jobs)))  # one line: GitHub Actions reads it with fromJSON()
        return
    table = Table(show_edge=False)
    for col in ("job", "source", "artifact"):
        table.add_column(col, overflow="fold")
    for job in jobs:
        table.add_row(escape(job.label), escape(shown_path(job.source)), escape(shown_path(job.output)))
    console.print(table)


def serve_built(outcomes: list[JobOutcome]) -> None:
    """Put every built artifact of a config with ``triton_repo`` into that repository, one after another
    (each takes the next version of its model)."""
    from infer_compile.app.triton import write_model

    for o in outcomes:
        if o.status != "failed" and o.job.triton_repo is not None:
            print_triton(write_model(o.job.output, o.job.triton_repo, o.job.triton_name))
