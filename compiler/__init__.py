"""infer-compile: an ahead-of-time model compiler for deep-learning inference."""

__version__ = "0.1.0"
