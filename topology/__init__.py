"""Topics, keys and the stage graph, declared once.

`topics` and `graph` declare; `render` draws text, Mermaid and the docs tables from them;
`apply` creates and verifies the topics on a cluster.
"""
