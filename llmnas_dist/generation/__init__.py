"""Generation: the LLM side of the search.

`models` resolves which LLM to load, `prompts` fills the templates, `engine` turns prompts
into answers (transformers or vLLM) with grammar-constrained sampling from `constrain`,
`finetune` is the LoRA update on elites (the CE step), `warmstart` and `mutations` build
theta_0 before the first cycle.
"""
