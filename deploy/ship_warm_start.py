"""Ship the default configuration's warm-start adapter with the package.

    .venv/bin/python deploy/ship_warm_start.py [--config PATH]

Run it after a change to anything the warm start's key holds (the model, LoRA fields, the
warm-start fields, admission settings, the dataset, the seed programs, the prompt templates,
warmstart.FORMAT_VERSION): tests/generation/test_warmstart.py fails until it is run. It
takes the adapter a run has cached for this key (trains it when none is cached: about
15 minutes on a 2-core CPU) and writes it, without this machine's paths, to
llmnas_dist/generation/warm_starts/, replacing the one shipped before; commit that folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from llmnas_dist.config import load_config
from llmnas_dist.generation.warmstart import ship_warm_start, warm_start_adapter
from llmnas_dist.seeds import seed_population


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=None, help="config file (the embedded default)")
    args = parser.parse_args()
    cfg = load_config(args.config)
    ws = warm_start_adapter(
        cfg.generation,
        cfg.finetune,
        cfg.admission,
        cfg.ce.dataset,
        seeds=seed_population(cfg.ce),
        input_size=cfg.evaluation.input_size,
        shipped=None,  # the cached or a newly trained adapter, never the old shipped one
    )
    dest = ship_warm_start(Path(ws.path), ws.key, cfg.generation.model)
    print(f"shipped {dest} ({'cached' if ws.cached else 'trained'}, {ws.n_examples} examples)")


if __name__ == "__main__":
    main()
