"""The stage runtime shared by every money stage: consume, apply, produce, commit."""
