# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: define no Net at all
# expect-static: contract_violation
# expect-runtime: build_failed
import torch


class Model(torch.nn.Module):
    pass
