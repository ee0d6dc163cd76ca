"""`paystream status`: each stage's consumers, lag, recent throughput and dead letters.

`model` joins what the broker says (group members, committed and end offsets)
with what PostgreSQL says (each partition's last batch and throughput window,
dead letters) into one snapshot, with no I/O; `collect` reads both sources;
`render` prints a snapshot as tables or as JSON.
"""
