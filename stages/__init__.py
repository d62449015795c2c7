"""Thin command-line wrappers that DVC runs; the logic lives in the `tunebench` package."""
