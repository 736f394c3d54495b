# ruff: noqa  (hostile test data, deliberately bad code)
# attempts: torch.nn.parallel is allowed: join a process group over TCP through DistributedDataParallel's module
# expect-static: forbidden_call
# expect-runtime: ok,build_failed
import torch
import torch.nn.parallel as par
from torch import nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        par.distributed.dist.init_process_group(
            "gloo", init_method="tcp://10.0.0.1:29500", rank=0, world_size=2
        )
        self.fc = nn.Linear(in_shape[1] * in_shape[2] * in_shape[3], out_shape[0])

    def forward(self, x):
        return self.fc(x.flatten(1))
