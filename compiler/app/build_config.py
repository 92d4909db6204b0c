"""Build matrices from a config file (`infer-compile build -c infer.toml`).

    output_dir = "build"                     # relative to the config file (default "build")
    targets = ["onnxruntime", "openvino"]    # defaults for every model
    precisions = ["fp32"]
    triton_repo = "serve"                    # optional: every artifact also goes into this Triton repository,
                                             # as model <name>_<target>_<precision> (the next version)

    [[models]]
    path = "tiny_cnn.onnx"                   # relative to the config file (or python_entry = "pkg.mod:build")
    name = "tiny_cnn"                        # default: the file's stem
    # optional, per model (or at the top, for every model): targets, precisions, and every declared option by
    # its key (the compile flags' names): input_shapes = { image = [1, 3, 32, 32] }, calib = "data/",
    # shape_ranges = { batch = [1, 8, 32] }, tune_time = "10s", skip_passes, final_check, inputs = "x.npz", ...

Every model x target x precision is one job, built in its own process (up to ``-j N`` at a time)
to ``<output_dir>/<name>.<target>.<precision><suffix>``. A job that fails does not stop the others.
"""

from __future__ import annotations

import fnmatch
import multiprocessing
import os
import re
import signal
import time
import tomllib
from collections.abc import Callable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from infer_compile.app.build import BuildOptions, compile_model, options_from, resolve_target
from infer_compile.app.build_options import PRECISIONS, TRITON_REPO
from infer_compile.app.settings import declared
from infer_compile.app.triton import serving_for
from infer_compile.core.errors import ExitCode, InferCompileError, Terminated, UserInputError
from infer_compile.core.manifest import manifest_path
from infer_compile.core.options import closest, read
from infer_compile.frontends.specs import entry_point_file
from infer_compile.targets import TARGETS, Target

MATRIX_SCHEMA = "infer-compile.build-matrix/1"
# Beside these, every declared option a config can set (settings.declared(), Option.config: calib, tune_time,
# fold_size_limit, opt_level, ...) is a key, at the top (a default for every model) or per model.
_TOP_KEYS = {"output_dir", "targets", "precisions", "models"}
_MODEL_KEYS = {"path", "name", "targets", "precisions", "pass_options", "target_options"}


def config_keys() -> set[str]:
    """The declared options a config file takes, by key."""
    return {key for key, (option, _) in declared().items() if option.config}
_HINT = "see 'Building from a config file' in the README for the keys"


@dataclass(frozen=True)
class Job:
    model: str
    target: str
    precision: str
    source: Path
    options: BuildOptions = field(compare=False)
    triton_repo: Path | None = field(default=None, compare=False)  # also serve the artifact from this repository

    @property
    def label(self) -> str:
        return f"{self.model}/{self.target}/{self.precision}"

    @property
    def triton_name(self) -> str:
        return f"{self.model}_{self.target}_{self.precision}"

    @property
    def output(self) -> Path:
        """The artifact this job writes: a config job always names one (its output folder / model.target...)."""
        if self.options.output is None:
            raise AssertionError(f"{self.label}: a config job without an output path")
        return Path(self.options.output)


@dataclass
class JobOutcome:
    job: Job
    status: str  # "built", "cached" or "failed"
    seconds: float
    error: str = ""
    hint: str = ""
    exit_code: int = 0
    report: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        body = {"model": self.job.model, "target": self.job.target, "precision": self.job.precision,
                "source": str(self.job.source), "status": self.status, "seconds": round(self.seconds, 4)}
        if self.status == "failed":
            body.update(error=self.error, hint=self.hint, exit_code=self.exit_code)
        return {**body, "report": self.report}


class ConfigError(UserInputError):
    """A config file problem, located as `file:line: key: problem`."""

    def __init__(self, config: Path, text: str, key: str, problem: str, hint: str | None = None,
                 model: int | None = None) -> None:
        line = _line_of(text, key, model)
        where = f"{config}:{line}" if line else str(config)
        super().__init__(f"{where}: {key}: {problem}", hint=hint or _HINT)


def _line_of(text: str, key: str, model: int | None) -> int | None:
    """The line where dotted ``key`` is set: its most specific part found as `part =` (inside the
    ``model``-th [[models]] table, when given), else that table's header line."""
    lines = text.splitlines()
    start, end = 0, len(lines)
    if model is not None:
        headers = [i for i, line in enumerate(lines) if line.strip().startswith("[[models]]")]
        if model >= len(headers):
            return None
        start = headers[model]
        end = next((i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")), len(lines))
    for part in reversed([p.split("[")[0] for p in key.split(".")]):
        assignment = re.compile(rf"^\s*{re.escape(part)}\s*=")
        found = next((i + 1 for i in range(start, end) if assignment.match(lines[i])), None)
        if found:
            return found
    return start + 1 if model is not None else None


def load_config(config: Path, overrides: Mapping[str, Any] | None = None) -> list[Job]:
    """The jobs ``config`` describes; ConfigError names the file, line and key of any problem. ``overrides``
    (declared options by key, e.g. the build command's ``cache_dir``) win over the file's values."""
    if not config.is_file():
        raise UserInputError(f"{config}: no such config file", hint="give one with -c infer.toml")
    text = config.read_text()
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UserInputError(f"{config}: not valid TOML: {exc}", hint="fix the syntax at that line") from exc
    return _Parser(config, text, dict(overrides or {})).jobs(data)


class _Parser:
    def __init__(self, config: Path, text: str, overrides: dict[str, Any]) -> None:
        self.config, self.text, self.overrides = config, text, overrides
        self.base = config.resolve().parent

    def fail(self, key: str, problem: str, hint: str | None = None, model: int | None = None) -> ConfigError:
        return ConfigError(self.config, self.text, key, problem, hint, model)

    def jobs(self, data: dict[str, Any]) -> list[Job]:
        self.check_keys(data, _TOP_KEYS | config_keys(), "")
        models = data.get("models")
        if not isinstance(models, list) or not models or not all(isinstance(m, dict) for m in models):
            raise self.fail("models", "missing or not a list of tables",
                            hint='add at least one [[models]] table with path = "model.onnx"')
        output_dir = self.base / self.typed(data, "output_dir", str, "build")
        jobs: list[Job] = []
        for index, entry in enumerate(models):
            jobs += self.model_jobs(index, entry, data, output_dir)
        outputs = [j.output for j in jobs]
        duplicate = next((j for j in jobs if outputs.count(j.output) > 1), None)
        if duplicate:
            raise self.fail("models", f"two jobs would write {duplicate.output}",
                            hint="give the models different names (name = ...)")
        return jobs

    def check_keys(self, table: dict[str, Any], allowed: set[str], prefix: str, model: int | None = None) -> None:
        for key in table:
            if key not in allowed:
                raise self.fail(prefix + key, f"unknown key{closest(key, allowed)}",
                                hint=f"known keys: {', '.join(sorted(allowed))}", model=model)

    def option_values(self, entry: dict[str, Any], defaults: dict[str, Any], prefix: str,
                      model: int) -> dict[str, Any]:
        """The declared options of a model table over the top-level defaults (the legacy ``pass_options`` and
        ``target_options`` tables merged in), paths relative to the config file, each value checked alone so
        that an error names its line."""
        values = {key: value for key, value in defaults.items() if key in declared()}
        for table in ("pass_options", "target_options"):
            values.update(self.typed(entry, table, dict, {}, prefix, model))
        values.update({key: value for key, value in entry.items() if key in declared()})
        for key, value in values.items():
            # Paths only: "synthetic" and pkg.mod:fn are not relative to anything.
            if declared()[key][0].path and isinstance(value, str) and ":" not in value and value != "synthetic":
                values[key] = str(self.base / value)
        for key, value in values.items():
            try:
                declared()[key][0].value(value, prefix + key)
            except UserInputError as exc:
                raise self.fail(prefix + key, exc.message.removeprefix(prefix + key + ": "), exc.hint,
                                model=model) from None
        return {**values, **self.overrides}

    def typed(self, table: dict[str, Any], key: str, kind: type | tuple[type, ...], default: Any,
              prefix: str = "", model: int | None = None) -> Any:
        value = table.get(key, default)
        if not isinstance(value, kind):
            names = " or ".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise self.fail(prefix + key, f"expected {names}, got {type(value).__name__} {value!r}", model=model)
        return value

    def names(self, table: dict[str, Any], key: str, default: list[str], prefix: str = "", model: int | None = None,
              ) -> list[str]:
        value = self.typed(table, key, list, default, prefix, model)
        if not value or not all(isinstance(v, str) for v in value):
            raise self.fail(prefix + key, "expected a non-empty list of strings", model=model)
        return value

    def source(self, entry: dict[str, Any], prefix: str, index: int) -> Path:
        """The model's file: ``path``, or the file defining its ``python_entry`` (relative to the config file)."""
        entry_point = entry.get("python_entry")
        if ("path" in entry) == isinstance(entry_point, str):
            raise self.fail(prefix + "path", "missing" if entry_point is None else "path and python_entry exclude "
                            "each other", hint='every [[models]] needs path = "model.onnx" or python_entry = '
                            '"pkg.mod:build"', model=index)
        if not isinstance(entry_point, str):
            return self.base / self.typed(entry, "path", str, "", prefix, index)
        module, _, function = entry_point.partition(":")
        if module.endswith(".py"):  # a file beside the config, like every other path in it
            entry["python_entry"] = entry_point = f"{self.base / module}:{function}"
        try:
            return entry_point_file(entry_point, prefix + "python_entry")
        except UserInputError as exc:
            raise self.fail(prefix + "python_entry", exc.message, exc.hint, model=index) from None

    def model_jobs(self, index: int, entry: dict[str, Any], defaults: dict[str, Any], output_dir: Path) -> list[Job]:
        prefix = f"models[{index}]."
        self.check_keys(entry, _MODEL_KEYS | config_keys(), prefix, index)
        source = self.source(entry, prefix, index)
        name = self.typed(entry, "name", str, source.stem, prefix, index)
        targets = self.names(entry, "targets", self.names(defaults, "targets", ["auto"]), prefix, index)
        precisions = self.names(entry, "precisions", self.names(defaults, "precisions", ["fp32"]), prefix, index)
        for precision in precisions:
            if precision not in PRECISIONS:
                raise self.fail(prefix + "precisions", f"unknown precision '{precision}'",
                                hint=f"use {', '.join(PRECISIONS)}", model=index)
        values = self.option_values(entry, defaults, prefix, index)
        jobs = []
        for target_name in targets:
            try:
                target, _ = resolve_target(target_name)
                if values.get(TRITON_REPO.key) is not None:
                    serving_for(target.name)
            except InferCompileError as exc:
                raise self.fail(prefix + "targets", exc.message, exc.hint, model=index) from None
            for precision in precisions:
                output = output_dir / f"{name}.{target.name}.{precision}{target.suffix}"
                try:
                    options, build = options_from({**self.job_values(values, target, precision),
                                                   "target": target.name, "precision": precision,
                                                   "output": output}, spelling=lambda option: prefix + option.key)
                except UserInputError as exc:
                    raise self.fail(prefix.rstrip("."), exc.message, exc.hint, model=index) from None
                jobs.append(Job(name, target.name, precision, source, options, read(build, TRITON_REPO)))
        return jobs

    @staticmethod
    def job_values(values: dict[str, Any], target: Target, precision: str) -> dict[str, Any]:
        """A model's options as one job takes them: a target's own settings go to its jobs, options for some
        precisions to those jobs only."""
        target_keys = {option.key for t in TARGETS for option in t.options}
        own = {option.key for option in target.options}

        def applies(key: str) -> bool:
            option = declared()[key][0]
            if key in target_keys:
                return key in own
            return not option.precisions or precision in option.precisions

        return {key: value for key, value in values.items() if applies(key)}


def select_jobs(jobs: list[Job], only: list[str], shard: str | None) -> list[Job]:
    """The jobs ``--only`` patterns name (all without), then the ``--shard I/N`` share of them: every N-th job
    from the I-th on, so each share mixes models and targets alike. A pattern that matches no job is refused."""
    if only:
        labels = [job.label for job in jobs]
        for pattern in only:
            if not fnmatch.filter(labels, pattern):
                raise UserInputError(f"--only {pattern}: no job is named like that{closest(pattern, labels)}",
                                     hint="jobs are MODEL/TARGET/PRECISION; list them with --list-jobs")
        jobs = [job for job in jobs if any(fnmatch.fnmatchcase(job.label, pattern) for pattern in only)]
    if shard is None:
        return jobs
    index, count = parse_shard(shard)
    return jobs[index - 1::count]


def parse_shard(text: str) -> tuple[int, int]:
    """`I/N` -> (I, N) with 1 <= I <= N."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None or not 1 <= int(match[1]) <= int(match[2]):
        raise UserInputError(f"--shard '{text}' is not I/N with 1 <= I <= N",
                             hint="e.g. --shard 2/4 (the 2nd of 4 runners)")
    return int(match[1]), int(match[2])


def job_matrix(jobs: list[Job]) -> dict[str, Any]:
    """The jobs as a CI job matrix: ``{"include": [{"job", "model", "target", "precision"}, ...]}`` (GitHub
    Actions' ``strategy.matrix``; each entry's ``job`` is what ``--only`` takes)."""
    return {"include": [{"job": job.label, "model": job.model, "target": job.target, "precision": job.precision}
                        for job in jobs]}


def run_job(job: Job) -> JobOutcome:
    """Build one job (in a worker process); failures become outcomes, never exceptions."""
    from infer_compile.app.report import build_report

    start = time.perf_counter()
    try:
        result = compile_model(job.source, job.options)
    except InferCompileError as exc:
        return JobOutcome(job, "failed", time.perf_counter() - start, exc.message, exc.hint or "", int(exc.exit_code))
    except Exception as exc:
        return JobOutcome(job, "failed", time.perf_counter() - start, f"internal error: {type(exc).__name__}: {exc}",
                          "rerun this job with `infer-compile compile --debug` for the traceback",
                          int(ExitCode.INTERNAL))
    status = "cached" if result.cache == "hit" else "built"
    return JobOutcome(job, status, time.perf_counter() - start, report=build_report(result))


class _Worker:
    """A build worker's state for its signal handler."""

    busy = False  # building a job: a signal then unwinds it (cleanup), else the worker just exits


def _worker_signal(signum: int, frame: object) -> None:
    if _Worker.busy:
        raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt
    os._exit(128 + signum)  # idle or starting: nothing to clean up, and no traceback on stderr


def _init_worker() -> None:
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _worker_signal)


def _run_in_worker(job: Job) -> JobOutcome:
    _Worker.busy = True
    try:
        return run_job(job)
    except KeyboardInterrupt as exc:  # its cleanup ran on the way here; take no further queued job
        os._exit(ExitCode.TERMINATED if isinstance(exc, Terminated) else ExitCode.INTERRUPTED)
    finally:
        _Worker.busy = False


def run_jobs(jobs: list[Job], workers: int, done: Callable[[JobOutcome], None] | None = None) -> list[JobOutcome]:
    """Run ``jobs`` in up to ``workers`` processes; outcomes in the jobs' order."""
    outcomes: dict[int, JobOutcome] = {}
    # spawn, not fork: a process that already ran onnxruntime/OpenVINO holds thread-pool locks a forked
    # child would inherit locked (deadlock); fresh workers cost an import each, small next to a build.
    context = multiprocessing.get_context("spawn")
    started = time.time()
    with ProcessPoolExecutor(max_workers=max(1, min(workers, len(jobs))), mp_context=context,
                             initializer=_init_worker) as pool:
        try:
            futures = {pool.submit(_run_in_worker, job): index for index, job in enumerate(jobs)}
            for future in as_completed(futures):
                index = futures[future]
                try:
                    outcome = future.result()
                except Exception as exc:  # the worker died (a native crash in a target library)
                    outcome = JobOutcome(jobs[index], "failed", 0.0, f"worker process died: {exc}",
                                         "rerun this job alone with `infer-compile compile --debug`",
                                         int(ExitCode.INTERNAL))
                outcomes[index] = outcome
                if done:
                    done(outcome)
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM here: stop the workers too (a running job cleans up)
            _stop_workers(pool)
            # Workers commit before this process hears of it: ask the disk what was completed.
            exc.written = [job.output for job in jobs  # type: ignore[attr-defined]
                           if _written_since(job.output, started)]
            raise
    return [outcomes[i] for i in range(len(jobs))]


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    stopping = multiprocessing.active_children()
    for worker in stopping:
        worker.terminate()  # a busy worker unwinds its job (cleanup), an idle one exits
    for worker in stopping:
        worker.join(timeout=60)
    # Join the pool's manager thread now: left running, it closes its wake-up pipe while CPython's exit hook
    # writes to it (3.11 takes no lock there), printing "OSError: Bad file descriptor" after our last line.
    pool.shutdown(wait=True, cancel_futures=True)


def _written_since(artifact: Path, started: float) -> bool:
    try:
        return manifest_path(artifact).stat().st_mtime >= started  # the manifest is committed last
    except OSError:
        return False


def exit_code(outcomes: list[JobOutcome]) -> int:
    """0 when all built; the failures' shared exit code, else the user-error code."""
    codes = {o.exit_code for o in outcomes if o.status == "failed"}
    if not codes:
        return int(ExitCode.OK)
    return codes.pop() if len(codes) == 1 else int(ExitCode.USER_ERROR)
