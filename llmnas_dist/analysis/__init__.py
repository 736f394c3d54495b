"""Analysis of a run: what the archive's rows say about the search, and the report.

Layers, each importing only those above it (and never db, ray, workers or cluster):

- `source`: what the analysis reads from an archive, as a Protocol (`RunSource`)
- `stats`: statistics helpers on plain numbers (trend test, intervals, Markov model, ...)
- `rundata`: one run's rows as typed records (`load_run_data`) and per-run views
- `gate`: the proxy-reliability gate the driver applies at runtime (`noise_gate`)
- `timeline`: busy spans of the actors, per-cycle utilisation and scaling advice
- `results`: the six results of the CE view (`diagnose`)
- `page`, `svg`: the report's page kit (escaping, CSS, tables) and SVG chart kit
- `result_sections`, `utilisation_section`: the report's sections
- `report`: the run and comparison pages and their JSON
"""
