"""Standalone rationale models (selector + classifier); see issue "Standalone rationale trainer"."""
