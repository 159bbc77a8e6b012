"""The one error type every user-facing reader raises (re-exported so edge code needs no other import)."""

from scenecap import ScenecapError

__all__ = ["ScenecapError"]
