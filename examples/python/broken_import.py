"""Fails to import: a new version that must be rolled back."""

raise ImportError("this version of the model cannot be imported (a missing dependency)")
