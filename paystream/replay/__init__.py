"""Record a topic range to a file, and play it (or a live topic range) back at a chosen pace.

`recording` is the file format, `source` reads a topic range, `pacing` and
`rewrite` are the pure rules of the player, and `player` sends. One iterator
of `RecordedRecord` (from a file or from a topic) feeds one player.
"""
