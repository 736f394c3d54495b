"""The `llmnas` commands that need no Ray: one module per command, `main` assembles them.

The commands may read the archive (db); `run` and `scale` live with the driver in
`cluster/`, which is the only place that starts actors.
"""
