"""The `aggregate` interface's resource, where componentize-py looks for it."""

from app import State

__all__ = ["State"]
