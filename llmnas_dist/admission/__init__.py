"""Admission: the filter between an LLM answer and training.

`pipeline` runs the steps in order: the delta codec (`delta`) extracts and applies the
answer, the program's static checks and contract (`llmnas_dist.program`), the sandboxed
build verdict (`build`), exact-hash dedup and MinHash novelty (`novelty`). `grammar` writes
the per-parent answer grammar that makes a delta valid by construction.
"""
