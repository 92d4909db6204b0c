"""infer-compile: an ahead-of-time model compiler for deep-learning inference."""

__version__ = "0.1.0"

# The Python API (infer_compile.compile / infer_compile.load) is imported on first use, so
# `import infer_compile` stays light and `infer-compile --help` fast.
_API = ("Artifact", "compile", "load")


def __getattr__(name: str) -> object:
    if name in _API:
        from infer_compile.app import api

        return getattr(api, name)
    raise AttributeError(f"module 'infer_compile' has no attribute '{name}'")


__all__ = ["Artifact", "__version__", "compile", "load"]
