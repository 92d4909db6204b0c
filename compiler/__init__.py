"""infer-compile: an ahead-of-time model compiler for deep-learning inference."""

from infer_compile.core.lazy import lazy_attributes

__version__ = "0.1.0"

# The Python API (infer_compile.compile / infer_compile.load) is imported on first use, so
# `import infer_compile` stays light and `infer-compile --help` fast.
__getattr__ = lazy_attributes(__name__, {"Artifact": "app.api", "compile": "app.api", "load": "app.api"})

__all__ = ["Artifact", "__version__", "compile", "load"]
