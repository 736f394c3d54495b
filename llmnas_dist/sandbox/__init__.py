"""The sandbox: run generated programs in a confined child process.

`runner` (run_in_sandbox, limits, capabilities), `gpus` (GPU grants), `launch` (the child's
command, scrubbed environment and confinement rules), `zygote` (the parent's side of the
pre-warmed fork server), `child` (the child package). Keep this file free of code: the
child imports it first, as `python -I -m llmnas_dist.sandbox.child`.
"""
