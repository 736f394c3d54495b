"""Evaluation: a program's proxy score.

`datasets` names the datasets and loads them, `recipe` is the fixed seeded training
procedure, `evaluate` runs one evaluation in the sandbox and checks its verdict,
`deadline` sets the adaptive wall-clock limit, `noise` measures how far seeds move a score.
"""
