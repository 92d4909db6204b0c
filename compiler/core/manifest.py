"""The manifest beside every artifact, ``<artifact>.manifest.json``: its one type, assembly, writer and reader.

The build describes what it did (``BuildFacts``); ``Target.compile`` completes that into a ``Manifest`` with
what the target wrote (``Manifest.assemble``) and the staging code writes it beside the artifact. Targets
(``load``), the report, the build cache, ``inspect``, ``run`` and ``verify`` read it back through
``read_manifest``, which refuses a damaged or hand-edited file in one line.

The file is one flat JSON object (schema 1; keys were added over the releases, none renamed or removed):

    schema, infer_compile, source, inputs, outputs, passes, shape_ranges, tool_versions   the build
    quantization, autotune                                                                pass sections
    target, precision, artifact {file, files, sha256}                                     Target.compile
    format, session_options, builder_settings, io, ...                                    the target's own
    final_check                                                                           the final check
    precision_choice                                                  --precision auto's table

Keys this module does not name belong to the target (``Manifest.target_fields``). Manifests of older
versions lack ``schema``, ``shape_ranges`` or ``final_check``; they read as schema 1 without them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from infer_compile.core.errors import UserInputError
from infer_compile.core.shapes import ShapeRange, shape_ranges_json

MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_SCHEMA = 1
# The manifest sections passes return (PassResult.manifest keys): a key not listed here is a bug, refused.
PASS_SECTIONS = ("quantization", "autotune")
_BUILD_KEYS = ("infer_compile", "source", "inputs", "outputs", "passes", "shape_ranges", "tool_versions")
_TARGET_KEYS = ("target", "precision", "artifact")
_COMMON_KEYS = frozenset({"schema", *_BUILD_KEYS, *PASS_SECTIONS, *_TARGET_KEYS, "final_check", "precision_choice"})
_JSON_NAMES: dict[type, str] = {dict: "object", list: "list", str: "string"}


def manifest_path(artifact: Path) -> Path:
    return artifact.with_name(artifact.name + MANIFEST_SUFFIX)


@dataclass(frozen=True)
class BuildFacts:
    """What a build knows before its target writes anything: the source, the graph's I/O, what ran."""

    source: dict[str, Any]  # path, format, sha256, and what the frontend adds (exporter, upgrade, ...)
    inputs: list[dict[str, Any]]  # TensorSpec.to_json() of the optimized graph's inputs
    outputs: list[dict[str, Any]]
    passes: list[str] = field(default_factory=list)  # the passes that changed the graph, in order
    shape_ranges: dict[str, ShapeRange] = field(default_factory=dict)
    tool_versions: dict[str, str] = field(default_factory=dict)
    pass_sections: dict[str, Any] = field(default_factory=dict)  # what passes returned, by section (PASS_SECTIONS)
    infer_compile: str | None = None  # the infer-compile version that built it (None: not recorded)

    def __post_init__(self) -> None:
        if unknown := sorted(set(self.pass_sections) - set(PASS_SECTIONS)):
            raise ValueError(f"manifest section(s) {', '.join(unknown)} not declared in manifest.PASS_SECTIONS")

    def to_json(self) -> dict[str, Any]:
        head = {} if self.infer_compile is None else {"infer_compile": self.infer_compile}
        return {**head, "source": self.source, "inputs": self.inputs, "outputs": self.outputs,
                "passes": self.passes, "shape_ranges": shape_ranges_json(self.shape_ranges),
                "tool_versions": self.tool_versions, **self.pass_sections}

    @classmethod
    def from_json(cls, body: Any) -> BuildFacts:
        """The build part of a manifest (or of a TensorRT bundle's build record); ValueError names what is
        wrong. Keys of other parts are ignored."""
        if not isinstance(body, Mapping):
            raise ValueError(f"a JSON object was expected, not {type(body).__name__}")
        version = body.get("infer_compile")
        if version is not None and not isinstance(version, str):
            raise ValueError("'infer_compile' is not a version")
        ranges = _typed(body, "shape_ranges", dict, {})
        try:
            shape_ranges = {str(dim): ShapeRange.from_json(bounds) for dim, bounds in ranges.items()}
        except ValueError as exc:
            raise ValueError(f"a shape range {exc}") from None
        passes = _typed(body, "passes", list, [])
        tools = _typed(body, "tool_versions", dict, {})
        if not all(isinstance(name, str) for name in passes):
            raise ValueError("'passes' is not a list of pass names")
        return cls(source=_typed(body, "source", dict, {}), inputs=_tensors(body, "inputs"),
                   outputs=_tensors(body, "outputs"), passes=passes, shape_ranges=shape_ranges,
                   tool_versions={str(k): str(v) for k, v in tools.items()},
                   pass_sections={key: body[key] for key in PASS_SECTIONS if key in body}, infer_compile=version)


@dataclass(frozen=True)
class ArtifactFiles:
    """The files an artifact consists of (only these are ever replaced by a later build) and its digest."""

    file: str  # the main file's (or folder's) name
    files: list[str]  # every file name beside it the build wrote, the manifest excluded
    sha256: str | None

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "files": self.files, "sha256": self.sha256}

    @classmethod
    def from_json(cls, body: Any) -> ArtifactFiles:
        if not isinstance(body, dict) or not isinstance(body.get("file"), str) or not isinstance(
                body.get("files"), list) or not all(isinstance(name, str) for name in body["files"]):
            raise ValueError("'artifact' does not list the artifact's files")
        return cls(body["file"], body["files"], body.get("sha256"))


@dataclass(frozen=True)
class Manifest:
    """One artifact's manifest (see the module docstring for its JSON form)."""

    target: str
    precision: str
    build: BuildFacts
    artifact: ArtifactFiles | None  # None only in hand-written manifests
    target_fields: dict[str, Any] = field(default_factory=dict)  # what the target's emit() recorded
    final_check: dict[str, Any] | None = None  # the final check's record; None when it did not run
    schema: int = MANIFEST_SCHEMA
    precision_choice: list[dict[str, Any]] | None = None  # --precision auto: every candidate, and the one chosen

    @classmethod
    def assemble(cls, build: BuildFacts, *, target: str, precision: str, artifact: ArtifactFiles,
                 target_tools: Mapping[str, str], target_fields: Mapping[str, Any]) -> Manifest:
        """The manifest of an artifact a target has just written (its final check is added with ``checked``)."""
        if clash := sorted(_COMMON_KEYS & set(target_fields)):
            raise ValueError(f"target '{target}' records field(s) the manifest owns: {', '.join(clash)}")
        build = replace(build, tool_versions={**build.tool_versions, **target_tools})
        return cls(target, precision, build, artifact, dict(target_fields))

    def checked(self, record: Mapping[str, Any]) -> Manifest:
        """This manifest with the final check's record."""
        return replace(self, final_check=dict(record))

    @property
    def quantization(self) -> dict[str, Any] | None:
        """The fp16/int8 passes' record: nodes per precision, calibration, accuracy, fallback."""
        return self.build.pass_sections.get("quantization")

    @property
    def autotune(self) -> dict[str, Any] | None:
        return self.build.pass_sections.get("autotune")

    def to_json(self) -> dict[str, Any]:
        target = {"target": self.target, "precision": self.precision,
                  **({} if self.artifact is None else {"artifact": self.artifact.to_json()})}
        check = {} if self.final_check is None else {"final_check": self.final_check}
        choice = {} if self.precision_choice is None else {"precision_choice": self.precision_choice}
        return {"schema": self.schema, **self.build.to_json(), **target, **self.target_fields, **check, **choice}

    @classmethod
    def from_json(cls, body: Any) -> Manifest:
        """A manifest from its JSON; ValueError says what makes it unusable."""
        if not isinstance(body, dict):
            raise ValueError(f"a JSON object was expected, not {type(body).__name__}")
        schema = body.get("schema", MANIFEST_SCHEMA)
        if schema != MANIFEST_SCHEMA:
            raise ValueError(f"schema {schema!r}; this infer-compile reads schema {MANIFEST_SCHEMA}")
        if not isinstance(body.get("target"), str):
            raise ValueError("no target named in it")
        precision = _typed(body, "precision", str, "fp32")  # hand-written manifests: judged as fp32, as before
        artifact = ArtifactFiles.from_json(body["artifact"]) if "artifact" in body else None
        check = _typed(body, "final_check", dict, None)
        return cls(body["target"], precision, BuildFacts.from_json(body), artifact,
                   {k: v for k, v in body.items() if k not in _COMMON_KEYS}, check, schema,
                   _typed(body, "precision_choice", list, None))


def target_field(manifest: Manifest | None, key: str, default: Any = None) -> Any:
    """A field the target recorded at emit(); ``default`` when it did not, or when there is no manifest (an
    artifact from elsewhere)."""
    return default if manifest is None else manifest.target_fields.get(key, default)


def _typed(body: Mapping[str, Any], key: str, kind: type, default: Any) -> Any:
    value = body.get(key, default)
    if value is not default and not isinstance(value, kind):
        raise ValueError(f"'{key}' is not a JSON {_JSON_NAMES[kind]}")
    return value


def _tensors(body: Mapping[str, Any], key: str) -> list[dict[str, Any]]:
    specs = body.get(key, [])
    if not isinstance(specs, list) or not all(isinstance(s, dict) and isinstance(s.get("name"), str) for s in specs):
        raise ValueError(f"'{key}' is not a list of named tensors")  # runners name their tensors from these
    return specs


def write_manifest(artifact: Path, manifest: Manifest) -> None:
    manifest_path(artifact).write_text(manifest_text(manifest))


def manifest_text(manifest: Manifest) -> str:
    return json.dumps(manifest.to_json(), indent=2, default=str) + "\n"


def manifest_json(artifact: Path) -> Any:
    """The manifest beside ``artifact`` as parsed JSON, unchecked (None when there is none); raises OSError
    or ValueError. Only for the staging code's question "which files are ours", which must not fail."""
    path = manifest_path(artifact)
    return json.loads(path.read_text()) if path.is_file() else None


def read_manifest(artifact: Path) -> Manifest | None:
    """The manifest beside ``artifact``, checked; None when there is none. A damaged or hand-edited one
    is a UserInputError naming the file."""
    try:
        body = manifest_json(artifact)
        return None if body is None else Manifest.from_json(body)
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise invalid_manifest(artifact, str(exc)) from None


def written_manifest(artifact: Path) -> Manifest:
    """The manifest a build has just written beside ``artifact`` (or a cache hit has delivered)."""
    manifest = read_manifest(artifact)
    if manifest is None:
        raise invalid_manifest(artifact, "it is missing")
    return manifest


def invalid_manifest(artifact: Path, reason: str) -> UserInputError:
    return UserInputError(f"{manifest_path(artifact)}: not a valid infer-compile manifest ({reason})",
                          hint="rebuild the artifact, or delete the manifest if you know its target")
