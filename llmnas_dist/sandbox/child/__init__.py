"""The sandbox child: what runs a generated program, started as
`python -I -m llmnas_dist.sandbox.child` (the entry is `__main__`) with a scrubbed
environment, by the parent's runner (llmnas_dist.sandbox.runner) or forked by the zygote.

- `supervisor`: the supervisor process and the worker it forks, their report and frames;
- `confine`: namespaces, Landlock, rlimits, the drop to `nobody`, the capability probe;
- `tasks`: the `build` and `train` tasks and what they import before the fork;
- `zygote`: the pre-warmed process that forks a supervisor per run.

Every module here imports only the standard library at import time (torch, the recipe and
the static allowlist inside functions) and never reads configuration or the environment:
the parent imports `tasks` for TASKS and `confine` for NOBODY and BASE_DEVICE_FILES, and
the child runs with a scrubbed environment. Keep this file free of code: it runs first in
every child.
"""
