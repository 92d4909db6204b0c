"""The application layer: the command line, builds, the Python API and the artifact commands."""
