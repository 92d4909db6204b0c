"""The `infer-compile` command line (typer + rich).

`infer-compile MODEL ...` compiles; the other commands are subcommands. Every user error is
one line on stderr with a hint and a documented exit code; tracebacks only with --debug.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated

import typer
from rich.console import JustifyMethod
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from infer_compile.app import artifact_cli
from infer_compile.app.terminal import (
    build_warnings,
    console,
    err_console,
    shown_path,
    size_text,
    user_errors,
)
from infer_compile.core.errors import (
    UserInputError,
    raise_on_sigterm,
)
from infer_compile.core.options import Option


class CompileByDefault(TyperGroup):
    """Routes `infer-compile MODEL ...` to the `compile` command; subcommands work as usual.

    The flags of compile and verify come from the components' declared options (collecting them and making ~60
    typer options takes a while): each command is made only when it runs or shows its help
    (``DECLARED_COMMANDS``), so `infer-compile --help` and the other commands start without that work.
    """

    listing = False  # formatting the root --help: compile and verify are listed by their help line alone

    def list_commands(self, ctx: typer.Context) -> list[str]:  # type: ignore[override]
        names = super().list_commands(ctx)
        return ["compile", *names[: names.index("bench") + 1], "verify", *names[names.index("bench") + 1:]]

    def get_command(self, ctx: typer.Context, name: str) -> typer.core.TyperCommand | None:  # type: ignore[override]
        if name in DECLARED_COMMANDS:
            return command_listing(name) if self.listing else declared_click_command(name)
        return super().get_command(ctx, name)  # type: ignore[return-value]

    def format_help(self, ctx: typer.Context, formatter: object) -> None:  # type: ignore[override]
        self.listing = True
        try:
            super().format_help(ctx, formatter)  # type: ignore[arg-type]
        finally:
            self.listing = False

    # Typer calls this with its typer.Context; the base class names click's Context (typer's own copy of click
    # since 0.2x, the click package before): narrower than the base, true of every call.
    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:  # type: ignore[override]
        if args and args[0] not in (*self.commands, *DECLARED_COMMANDS, "--help", "-h", "--version"):
            args = ["compile", *args]
        if "--calib-preprocess" in args:
            args = split_preprocess_words(args)
        return super().parse_args(ctx, args)


def split_preprocess_words(args: list[str]) -> list[str]:
    """`--calib-preprocess resize=256 crop=224 ...` (the words unquoted, as the README shows them) as one
    --calib-preprocess per word: KEY=VALUE words of preprocessing keys right after its value are its values too,
    not MODEL or extra arguments."""
    from infer_compile.calibration.readers import PREPROCESS_KEYS

    words: list[str] = []
    expect_value = in_run = False
    for word in args:
        if expect_value:
            words.append(word)
            expect_value, in_run = False, True
        elif in_run and "=" in word and word.partition("=")[0].lower() in PREPROCESS_KEYS:
            words += ["--calib-preprocess", word]
        else:
            words.append(word)
            expect_value = word == "--calib-preprocess"
            in_run = word.startswith("--calib-preprocess=")
    return words


app = typer.Typer(cls=CompileByDefault, add_completion=False, no_args_is_help=True,
                  pretty_exceptions_enable=False, rich_markup_mode="rich",
                  help="Compile a trained model into a fast, deployable inference artifact.")


def _version(value: bool) -> None:
    if value:
        from infer_compile import __version__

        console.print(f"infer-compile {__version__}")
        raise typer.Exit()


@app.callback()
def _root(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    """Compile a trained model into a fast, deployable inference artifact.

    Run `infer-compile MODEL --target auto -o OUT` to compile; the commands below inspect and run artifacts.
    """


def _changes(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in counts.items() if v) or "-"


def print_build(result) -> None:  # BuildResult; imported lazily to keep --help fast
    table = Table(title="passes applied", title_justify="left", show_edge=False)
    verified = any(r.verification for r in result.records)
    columns = ["pass", "changes", "nodes", "time"] + (["max abs err"] if verified else [])
    for col in columns:
        # Pass names and numbers never wrap: users copy names into --skip-pass.
        table.add_column(col, justify="left" if col in ("pass", "changes") else "right",
                         no_wrap=col != "changes")
    for r in (r for r in result.records if r.status == "applied"):
        row = [r.name, _changes(r.counts), f"{r.nodes_before}->{r.nodes_after}", f"{r.seconds * 1000:.1f}ms"]
        if verified:
            row.append(f"{r.verification['max_abs']:.1e}" if r.verification else "-")
        table.add_row(*row)
    console.print(table)
    unchanged = [r.name for r in result.records if r.status == "unchanged"]
    skipped = [f"{r.name} ({r.reason})" for r in result.records if r.status == "skipped"]
    for label, names in (("unchanged", unchanged), ("skipped", skipped)):
        if names:
            console.print(f"[bold]{label}:[/] {escape(', '.join(names))}", soft_wrap=True, highlight=False)
    # Plain key/value lines, soft-wrapped, so paths stay copyable in narrow terminals and CI logs.
    summary = {
        "target": f"{result.target} ({result.target_reason})",
        "precision": result.manifest.precision,
        "nodes": f"{result.nodes_before} -> {result.nodes_after}",
        "artifact": f"{shown_path(result.artifact)} ({size_text(result.artifact)})",
        "build time": f"{result.seconds:.2f} s",
        "cache": result.cache,
    }
    if export := describe_export_check(result.manifest.build.source):
        summary["export"] = export
    summary["final check"] = describe_final_check(result.manifest.final_check)
    from infer_compile.calibration.options import describe_precision

    if precision_line := describe_precision(result.manifest.quantization, result.manifest.final_check):
        summary["numerics"] = precision_line
    summary.update(result.manifest.target_fields.get("summary", {}))  # what the target says of itself (a route)
    for key, value in summary.items():
        console.print(f"[bold]{key:<11}[/] {escape(value)}", soft_wrap=True, highlight=False)
    print_precision_choice(result.manifest.precision_choice)


def print_precision_choice(rows: list[dict] | None) -> None:
    """--precision auto: every candidate built, its speed and accuracy here, and the one kept."""
    if not rows:
        return
    table = Table(title="precision auto (median latency here; accuracy vs the source on held-out samples)",
                  title_justify="left", show_edge=False)
    for col in ("precision", "median latency", "cosine", "max abs", "within budget", "chosen"):
        table.add_column(col, justify="left" if col in ("precision", "chosen", "within budget") else "right")
    for row in rows:
        if "refused" in row:
            table.add_row(row["precision"], "-", "-", "-", escape(row["refused"]), "")
            continue
        latency = f"{row['median_ms']:.3f} ms" if "median_ms" in row else "-"
        cosine = f"{row['cosine']:.6f}" if row.get("cosine") is not None else "-"
        max_abs = f"{row['max_abs']:.3g}" if row.get("max_abs") is not None else "-"
        table.add_row(row["precision"], latency, cosine, max_abs, "yes" if row["meets_budget"] else "no",
                      "<- kept" if row["chosen"] else "")
    console.print(table)


def describe_export_check(source: dict) -> str:
    """The build table's line for the frontend's check: the exported ONNX vs the source framework (as optimum and
    Ultralytics print it); empty for an ONNX source (nothing was exported)."""
    if "export_cosine" not in source:
        return ""
    framework = {"pytorch": "PyTorch", "tensorflow": "TensorFlow"}.get(source.get("format", ""), "the source")
    return (f"{source.get('exporter', 'exporter')} -> ONNX vs {framework} on the example inputs: cosine "
            f"{source['export_cosine']:.6f}, max abs {source['export_max_abs']:.3g}")


def describe_final_check(record: dict | None) -> str:
    """The build table's line for the final check: outcome, inputs, worst figures and its cost."""
    if not record:
        return "off (--no-final-check)"
    figures = record["figures"]
    return (f"{record['status']} in {record['seconds']:.2f} s: the artifact in its runtime vs the source on "
            f"{record['samples']} sample(s) ({record['origin']}), cosine {figures['cosine']:.6f}, max abs "
            f"{figures['max_abs']:.3g} ({record['precision']} tolerance)")


def print_tuning(record: dict | None) -> None:
    """The autotune results: every candidate's median and best latency, and the one chosen."""
    if not record:
        return
    asked = record.get("tune_time_s", record["budget_s"])
    budget = f"{record['budget_s']:g} s" + (f" (all this model needs of --tune-time {asked:g} s)"
                                           if asked > record["budget_s"] else "")
    started = record.get("startup_s", 0.0)
    startup = f" after {started:.1f} s starting the runtime" if started >= 0.05 else ""
    title = (f"autotune ({record['seconds']:.1f} s of {budget}{startup}; load {record.get('load_per_cpu')} "
             f"per CPU on {record.get('cpus')} CPUs; chosen by best latency)")
    table = Table(title=title, title_justify="left", show_edge=False)
    columns: tuple[tuple[str, JustifyMethod], ...] = (
        ("candidate", "left"), ("median latency", "right"), ("best", "right"), ("runs", "right"), ("chosen", "left"))
    for col, justify in columns:
        table.add_column(col, justify=justify)
    for c in record["candidates"]:
        chosen = "[green]yes[/]" if c["chosen"] else ""
        if c["median_ms"] is None:
            table.add_row(escape(c["label"]), "not timed (budget)", "-", "0", chosen)
        else:
            table.add_row(escape(c["label"]), f"{c['median_ms']:.3f} ms", f"{c['best_ms']:.3f} ms", str(c["runs"]),
                          chosen)
    console.print(table)
    if skipped := (record.get("layer_selection") or {}).get("skipped"):
        console.print(f"[bold]INT8 layers[/] not timed: {escape(skipped)}", highlight=False)
    if record.get("layers"):
        selection = record["layer_selection"]
        slower = sum(r.get("faster") == "fp32" for r in record["layers"])
        line = f"[bold]INT8 layers[/] {len(record['layers'])}, {slower} not faster than fp32 here"
        if "chosen" in selection:
            timings = ", ".join(f"{name[:-3].replace('_', ' ')} {ms:.3f} ms" for name, ms in selection.items()
                                if name.endswith("_ms"))
            line += f"; full model (best): {timings}; kept: {selection['chosen'].replace('_', ' ')}"
        console.print(line, highlight=False)


def compile_command(
    model: Annotated[Path | None, typer.Argument(
        help="Model file or folder (ONNX, PyTorch, TensorFlow); omit with --from-python.", show_default=False)] = None,
    fp16: Annotated[bool, typer.Option("--fp16", help="Build in half precision (--precision fp16).")] = False,
    bf16: Annotated[bool, typer.Option("--bf16", help="Compute in bfloat16 where the CPU has it (--precision bf16; "
                                       "OpenVINO on AVX512_BF16/AMX); weights stay fp32.")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="Build INT8 (--precision int8; needs calibration data).")]
    = False,
    no_tune: Annotated[bool, typer.Option("--no-tune", help="Skip autotuning (--tune-time 0).")] = False,
    explain: Annotated[list[str] | None, typer.Option(
        "--explain", metavar="PASS", help="After the build, list what pass PASS matched and why its rules did not "
                                          "fire elsewhere (repeatable; 'all' for every pass).")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
    **declared: object,  # every declared option, one flag each (settings.groups(); see with_declared_options)
) -> None:
    """Compile MODEL into an artifact for a target."""
    with user_errors(debug) as outcome:  # imports take seconds: a signal during them is handled too
        from infer_compile.app.build import check_deliveries, compile_model, deliver, options_from
        from infer_compile.app.explain import explained_passes, print_explanations
        from infer_compile.frontends.specs import model_source

        if fp16 + bf16 + int8 + bool(declared.get("precision")) > 1:
            raise UserInputError("--precision, --fp16, --bf16 and --int8 exclude each other",
                                 hint="choose one precision")
        shortcuts = {"precision": "int8" if int8 else "fp16" if fp16 else "bf16" if bf16 else None,
                     "tune_time": "0" if no_tune else None}
        explained = explained_passes(explain or [])
        options, build = options_from({**declared, **{k: v for k, v in shortcuts.items() if v is not None}},
                                      spelling=lambda option: option.cli_flag)
        check_deliveries(options, build)
        with build_progress() as (on_pass, on_status), build_warnings():
            result = compile_model(model_source(model, options.source.python_entry), options, progress=on_pass,
                                   status=on_status)
        outcome.written.append(result.artifact)
        print_build(result)
        print_explanations(result.records, explained, console)
        print_tuning(result.manifest.autotune)
        print_deferred(result)
        delivered = deliver(result, build)
        if delivered.overlay is not None:
            artifact_cli.print_overlay(result.artifact, delivered.overlay)
        if delivered.triton is not None:
            artifact_cli.print_triton(delivered.triton)


@contextlib.contextmanager
def build_progress() -> Iterator[tuple[Callable[..., None], Callable[[str], None]]]:
    """The build's progress on stderr: the pass hook and status hook of ``compile_model``, and the reporter of
    counted work and named stages (infer_compile.core.progress). A terminal gets a live line: the current step,
    and for counted work (calibration samples) a bar with the count and the time left. Anything else (CI logs)
    gets a few plain lines: the stages and counted work that took a second or more, with their times."""
    from infer_compile.core.progress import reporting

    if not err_console.is_terminal:
        plain = PlainProgress()
        with reporting(plain):
            yield (lambda p, index, total: None), (lambda text: None)
        plain.finish()
        return
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from infer_compile.app.terminal import counted_columns

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), *counted_columns(), console=err_console,
                  transient=True) as progress:
        live = LiveProgress(progress)
        with reporting(live):
            yield live.on_pass, live.stage


class LiveProgress:
    """One live line per build (the current step); counted work as a second line with a bar, count and ETA."""

    def __init__(self, progress) -> None:  # rich.progress.Progress (imported lazily)
        self.progress = progress
        self.step = progress.add_task("loading model", total=None)
        self.counts: dict[str, object] = {}

    def on_pass(self, p, index: int, total: int) -> None:  # p: a Pass
        self.stage(f"pass {index + 1}/{total}: {p.name}")

    def stage(self, text: str) -> None:
        self.progress.update(self.step, description=escape(text))

    def advance(self, label: str, done: int, total: int | None) -> None:
        if done == 0 or label not in self.counts:
            if label in self.counts:
                self.progress.remove_task(self.counts[label])
            self.counts[label] = self.progress.add_task(escape(label), total=total)
        self.progress.update(self.counts[label], completed=done)
        if total is not None and done >= total:
            self.progress.remove_task(self.counts.pop(label))


class PlainProgress:
    """Progress for logs: a line for each named stage and each counted work that took ``min_seconds`` or more,
    when it ends (its time, and the sample count); quick steps, and a failing one, leave no line. Counted work
    still running after ``every_seconds`` prints its count and the time left every ``every_seconds``."""

    min_seconds = 1.0
    every_seconds = 15.0

    def __init__(self) -> None:
        self.current: tuple[str, float] | None = None
        self.started: dict[str, float] = {}
        self.told: dict[str, float] = {}  # when a counted work's last line was printed

    def stage(self, text: str) -> None:
        self.finish()
        self.current = (text, time.perf_counter())

    def finish(self) -> None:
        """The current stage is done: its line, if it took long enough."""
        if self.current is not None:
            text, started = self.current
            self.current = None
            self._line(f"{text}", time.perf_counter() - started)

    def advance(self, label: str, done: int, total: int | None) -> None:
        now = time.perf_counter()
        if done == 0:
            self.started[label] = self.told[label] = now
        elif total is not None and done >= total:
            self.told.pop(label, None)
            self._line(f"{label}: {done} sample(s)", now - self.started.pop(label, now))
        elif label in self.started and now - self.told[label] >= self.every_seconds:
            self.told[label] = now
            elapsed = now - self.started[label]
            left = f", about {elapsed / done * (total - done):.0f} s left" if total else ""
            err_console.print(f"{escape(label)}: {done}{f'/{total}' if total else ''} sample(s) in {elapsed:.0f} s"
                              f"{left}", highlight=False, soft_wrap=True)

    def _line(self, text: str, seconds: float) -> None:
        if seconds >= self.min_seconds:
            err_console.print(f"{escape(text)} ({seconds:.1f} s)", highlight=False, soft_wrap=True)


def with_declared_options(command: Callable[..., None], owners: tuple[str, ...] | None = None) -> Callable[..., None]:
    """``command`` with one typer option per declared option (of the ``owners``' groups; default all), in
    `--help` panels by owner (its ``**declared`` receives them by key; None when not given)."""
    from infer_compile.app.settings import groups

    signature = inspect.signature(command, eval_str=True)
    explicit = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    generated = [inspect.Parameter(option.key, inspect.Parameter.KEYWORD_ONLY, default=None,
                                   annotation=Annotated[_cli_type(option), _typer_option(option, group.title)])
                 for group in groups() if owners is None or group.owner in owners
                 for option in group.options if option.cli]

    @functools.wraps(command)
    def wrapper(**values: object) -> None:
        command(**values)

    wrapper.__signature__ = signature.replace(parameters=[*explicit, *generated])  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in [*explicit, *generated]}
    return wrapper


def _cli_type(option: Option[object]) -> object:
    return {bool: bool | None, list: list[str] | None}.get(option.kind, option.kind | None)


def _typer_option(option: Option[object], panel: str) -> typer.models.OptionInfo:
    # A switch that is on by default (or unset: the component decides) can be turned off: --final-check/--no-...
    negatable = option.kind is bool and option.default in (None, True)
    flags = [f"{option.cli_flag}/--no-{option.cli_flag[2:]}" if negatable else option.cli_flag,
             *([option.short] if option.short else [])]
    env = f" (or ${option.env})" if option.env else ""
    default = "" if option.default in (None, False, [], {}) else f" \\[default: {option.default}{env}]"
    choices = f" ({', '.join(option.choices)})" if option.choices else ""
    return typer.Option(*flags, help=option.help + choices + default, rich_help_panel=panel, show_default=False)


# The commands taking declared options, made lazily (CompileByDefault): name -> (the command, the owners whose
# options it takes; None: every owner's).
DECLARED_COMMANDS: dict[str, tuple[Callable[..., None], tuple[str, ...] | None]] = {
    "compile": (compile_command, None), "verify": (artifact_cli.verify_command, ("source",))}


def _command_info(name: str, callback: Callable[..., None]) -> typer.models.CommandInfo:
    return typer.models.CommandInfo(name=name, callback=callback, help=inspect.getdoc(DECLARED_COMMANDS[name][0]))


@functools.cache
def declared_click_command(name: str) -> typer.core.TyperCommand:
    """Command ``name`` with a flag per declared option of its owners."""
    command, owners = DECLARED_COMMANDS[name]
    made = typer.main.get_command_from_info(_command_info(name, with_declared_options(command, owners)),
                                            pretty_exceptions_short=False, rich_markup_mode="rich")
    return made  # type: ignore[return-value]


@functools.cache
def command_listing(name: str) -> typer.core.TyperCommand:
    """Command ``name`` as the root --help lists it (its help line; no declared options needed)."""
    made = typer.main.get_command_from_info(_command_info(name, lambda: None), pretty_exceptions_short=False,
                                            rich_markup_mode="rich")
    return made  # type: ignore[return-value]


@app.command("targets")
def targets_command() -> None:
    """List targets, whether each can build on this machine, and why not."""
    from infer_compile.targets import TARGETS

    table = Table(show_edge=False)
    for col in ("target", "available", "suffix", "precisions", "dynamic shapes", "detail"):
        table.add_column(col)
    for t in TARGETS:
        status = t.availability()
        table.add_row(t.name, "[green]yes[/]" if status.available else "[red]no[/]", t.suffix,
                      ", ".join(sorted(t.precisions)), "yes" if t.dynamic_shapes else "no", escape(status.detail))
    console.print(table)


@app.command("passes")
def passes_command() -> None:
    """List the passes in pipeline order."""
    from infer_compile.passes import all_passes

    table = Table(show_edge=False)
    for col in ("pass", "needs", "description"):
        table.add_column(col)
    for name, cls in all_passes().items():
        table.add_row(name, ", ".join(sorted(cls.requires)) or "-", cls.description)
    console.print(table)


def print_deferred(result) -> None:  # BuildResult
    """For a --defer build: the equivalent trtexec command and the step that builds the engine."""
    fields = result.manifest.target_fields
    if fields.get("format") != "trtbundle":
        return
    for major, command in fields["trtexec"].items():
        console.print(f"[bold]{'trtexec':<11}[/] (TensorRT {major}.x, in a copy of the bundle) {escape(command)}",
                      soft_wrap=True, highlight=False)
    console.print(f"[bold]{'next':<11}[/] on a GPU machine: infer-compile finalize {escape(str(result.artifact))}",
                  soft_wrap=True, highlight=False)


@app.command("finalize")
def finalize_command(
    bundle: Annotated[Path, typer.Argument(help="A .trtbundle written by --target trt --defer.", show_default=False)],
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="Engine path (default: beside the bundle, named as at --defer).")] = None,
    timing_cache: Annotated[Path | None, typer.Option(
        "--timing-cache", help="Timing cache to read (else the bundle's own) and write this build's timings to; "
                               "the bundle itself is never changed.")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Build the TensorRT engine a deferred-build bundle describes (on a machine with an NVIDIA GPU)."""
    with user_errors(debug):
        from infer_compile.targets.tensorrt_bundle import finalize_bundle

        engine = finalize_bundle(bundle, output, timing_cache)[0]
        console.print(f"[bold]{'engine':<10}[/] {escape(str(engine))} ({size_text(engine)})", soft_wrap=True,
                      highlight=False)




# The artifact commands, in the order `--help` lists them.
app.command("run")(artifact_cli.run_command)
app.command("bench")(artifact_cli.bench_command)
app.command("inspect")(artifact_cli.inspect_command)
app.command("build")(artifact_cli.build_command)
app.command("triton")(artifact_cli.triton_command)
app.command("report")(artifact_cli.report_command)


def main() -> None:
    raise_on_sigterm()
    app(prog_name="infer-compile")


if __name__ == "__main__":
    main()
