"""The `infer-compile` command line (typer + rich).

`infer-compile MODEL ...` compiles; the other commands are subcommands. Every user error is
one line on stderr with a hint and a documented exit code; tracebacks only with --debug.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from typer.core import TyperGroup

from infer_compile.errors import ExitCode, InferCompileError, UserInputError

console = Console()
err_console = Console(stderr=True)


class CompileByDefault(TyperGroup):
    """Routes `infer-compile MODEL ...` to the `compile` command; subcommands work as usual."""

    def parse_args(self, ctx: typer.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h", "--version"):
            args = ["compile", *args]
        return super().parse_args(ctx, args)


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


@contextmanager
def user_errors(debug: bool) -> Iterator[None]:
    """Turn errors into one line + exit code; show tracebacks only when debugging."""
    try:
        yield
    except InferCompileError as exc:
        if debug:
            err_console.print_exception()
        err_console.print(f"[bold red]error:[/] {escape(exc.message)}", highlight=False, soft_wrap=True)
        if exc.hint:
            err_console.print(f"  hint: {escape(exc.hint)}", highlight=False, soft_wrap=True)
        raise typer.Exit(int(exc.exit_code)) from None
    except KeyboardInterrupt:
        err_console.print("[bold red]interrupted:[/] nothing was written")
        raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
    except (typer.Exit, typer.Abort, typer.TyperException):
        raise
    except Exception as exc:
        if debug:
            err_console.print_exception()
        err_console.print(f"[bold red]internal error:[/] {type(exc).__name__}: {escape(str(exc))}",
                          highlight=False, soft_wrap=True)
        if not debug:
            err_console.print("  hint: rerun with --debug for the traceback and report it")
        raise typer.Exit(int(ExitCode.INTERNAL)) from None


def parse_input_shapes(values: list[str]) -> dict[str, tuple[int, ...]]:
    """`name:1x3x224x224` (repeatable) -> {name: (1, 3, 224, 224)}."""
    shapes: dict[str, tuple[int, ...]] = {}
    for value in values:
        name, sep, dims = value.rpartition(":")
        try:
            shape = tuple(int(d) for d in dims.lower().split("x"))
        except ValueError:
            shape = ()
        if not sep or not name or not shape or any(d <= 0 for d in shape):
            raise UserInputError(f"--input-shape '{value}' is not NAME:DIMS",
                                 hint="write it like input:1x3x224x224")
        shapes[name] = shape
    return shapes


def _size(path: Path) -> str:
    size = sum(p.stat().st_size for p in ([path] if path.is_file() else path.rglob("*")) if p.is_file())
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError


def _changes(counts: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in counts.items() if v) or "-"


def print_build(result) -> None:  # BuildResult; imported lazily to keep --help fast
    table = Table(title="passes", title_justify="left", show_edge=False)
    for col, justify in (("pass", "left"), ("status", "left"), ("changes", "left"),
                         ("nodes", "right"), ("time", "right")):
        table.add_column(col, justify=justify)
    for r in result.records:
        status = r.status if r.status != "skipped" else f"skipped ({r.reason})"
        table.add_row(r.name, status, _changes(r.counts), f"{r.nodes_before} -> {r.nodes_after}",
                      f"{r.seconds * 1000:.1f} ms")
    console.print(table)
    # Plain key/value lines, soft-wrapped, so paths stay copyable in narrow terminals and CI logs.
    summary = {
        "target": f"{result.target} ({result.target_reason})",
        "precision": str(result.manifest.get("precision")),
        "nodes": f"{result.nodes_before} -> {result.nodes_after}",
        "artifact": f"{result.artifact} ({_size(result.artifact)})",
        "build time": f"{result.seconds:.2f} s",
    }
    for key, value in summary.items():
        console.print(f"[bold]{key:<10}[/] {escape(value)}", soft_wrap=True, highlight=False)


@app.command("compile")
def compile_command(
    model: Annotated[Path, typer.Argument(help="Model file or folder (ONNX, PyTorch, TensorFlow).",
                                          show_default=False)],
    target: Annotated[str, typer.Option("--target", "-t", help="auto, onnxruntime, openvino, trt or tflite.")]
    = "auto",
    fp16: Annotated[bool, typer.Option("--fp16", help="Build in half precision.")] = False,
    int8: Annotated[bool, typer.Option("--int8", help="Build INT8 (needs calibration data).")] = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Artifact path.")] = None,
    input_shape: Annotated[list[str] | None, typer.Option(
        "--input-shape", help="Pin an input's shape, NAME:1x3x224x224 (repeatable).")] = None,
    verify_passes: Annotated[bool, typer.Option(
        "--verify-passes", help="Check numerics after every pass; stop at the first that breaks them.")] = False,
    skip_pass: Annotated[list[str] | None, typer.Option(
        "--skip-pass", help="Leave a pass out of the pipeline (repeatable; see `infer-compile passes`).")] = None,
    report: Annotated[Path | None, typer.Option("--report", help="Write the build report JSON here.")] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks.")] = False,
) -> None:
    """Compile MODEL into an artifact for a target."""
    from rich.progress import Progress, SpinnerColumn, TextColumn

    from infer_compile.build import BuildOptions, compile_model
    from infer_compile.frontends import SourceOptions

    with user_errors(debug):
        if fp16 and int8:
            raise UserInputError("--fp16 and --int8 exclude each other", hint="choose one precision")
        options = BuildOptions(
            target=target,
            precision="int8" if int8 else "fp16" if fp16 else "fp32",
            output=output,
            source=SourceOptions(input_shapes=parse_input_shapes(input_shape or [])),
            verify_passes=verify_passes,
            skip_passes=list(skip_pass or []),
        )
        with Progress(SpinnerColumn(), TextColumn("{task.description}"), console=err_console,
                      transient=True, disable=not err_console.is_terminal) as progress:
            task = progress.add_task("loading model", total=None)

            def on_pass(p, index: int, total: int) -> None:
                progress.update(task, description=f"pass {index + 1}/{total}: {p.name}")

            result = compile_model(model, options, progress=on_pass)
        print_build(result)
        if report:
            from infer_compile.report import write_report

            write_report(result, report)


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
                      ", ".join(sorted(t.precisions)), "yes" if t.dynamic_shapes else "no", status.detail)
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


def main() -> None:
    app(prog_name="infer-compile")


if __name__ == "__main__":
    sys.exit(main())
