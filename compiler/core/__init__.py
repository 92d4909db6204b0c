"""The low layer: the IR, numerics, errors, artifact files and manifests, option and capability declarations.

Nothing here imports the application layer (``infer_compile.app``), passes, targets or frontends.
"""
