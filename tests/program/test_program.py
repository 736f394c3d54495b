"""Static checks, the contract and the canonical form."""

from __future__ import annotations

import sys
import threading
import time

import pytest
from fixtures import ROOT

from llmnas_dist.config import AdmissionConfig
from llmnas_dist.errors import CandidateRejected, ErrorClass
from llmnas_dist.program.source import parse_source
from llmnas_dist.program.static import canonicalize, check_static
from llmnas_dist.seeds import load_seeds

CFG = AdmissionConfig()
SEEDS = load_seeds()

GOOD = '''
"""A small net."""
import math
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import nn as tnn
from torch.nn import Conv2d
from collections import OrderedDict
from functools import partial


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return F.relu(self.conv(x)) + x


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super(Net, self).__init__()
        c = in_shape[1]
        for i in range(2):
            setattr(self, f"block{i}", Block(c))
        self.act = partial(F.leaky_relu, negative_slope=0.1)
        self.head = tnn.Linear(c, out_shape[0])
        nn.init.kaiming_normal_(self.head.weight, a=math.sqrt(5))
        self.name = self.__class__.__name__

    def forward(self, x):
        for i in range(2):
            x = getattr(self, "block" + str(i))(x)
        x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return self.head(self.act(x))


if __name__ == "__main__":
    print("{} {}".format(1, 2))
'''


def test_good_program_passes_and_canonical_form_ignores_formatting():
    canonical, digest = canonicalize(GOOD, CFG)
    reformatted = GOOD.replace('"""A small net."""', "# a comment\n").replace(
        "self.conv = Conv2d(c, c, 3, padding=1)", "self.conv = Conv2d( c,c , 3,padding = 1 )  # x"
    )
    assert canonicalize(reformatted, CFG) == (canonical, digest)
    assert "A small net" not in canonical
    compile(canonical, "canonical", "exec")  # still valid Python
    changed = GOOD.replace("padding=1", "padding=2")
    assert canonicalize(changed, CFG)[1] != digest


HEADER = "import torch\nimport torch.nn as nn\n"
NET = """
class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        {init}

    def forward(self, x):
        return x
"""


def net_with(init: str, header: str = HEADER) -> str:
    return header + NET.format(init=init)


@pytest.mark.parametrize(
    ("code", "error_class"),
    [
        (net_with("os.getcwd()", "import os\n" + HEADER), ErrorClass.FORBIDDEN_IMPORT),
        (net_with("pass", "import subprocess\n" + HEADER), ErrorClass.FORBIDDEN_IMPORT),
        (net_with("x = o.path", "import os as o\n" + HEADER), ErrorClass.FORBIDDEN_IMPORT),
        (net_with("pass", "from os import *\n" + HEADER), ErrorClass.FORBIDDEN_IMPORT),
        (net_with("x = path", "from os import path\n" + HEADER), ErrorClass.FORBIDDEN_IMPORT),
        (net_with("pass", "from typing import *\n" + HEADER), ErrorClass.FORBIDDEN_CALL),
        (net_with("pass", "from torch.nn import *\n" + HEADER), ErrorClass.FORBIDDEN_IMPORT),
        (net_with("torch.jit.script(self)"), ErrorClass.FORBIDDEN_CALL),
        (net_with("torch.jit.load('m.pt')"), ErrorClass.FORBIDDEN_CALL),
        (net_with("x = self.jit"), ErrorClass.FORBIDDEN_CALL),
        (net_with("pass", "from torch.jit import trace\n" + HEADER), ErrorClass.FORBIDDEN_CALL),
        (net_with("torch.backends.cudnn.enabled = False"), ErrorClass.FORBIDDEN_CALL),
        (net_with("torch.backends.cudnn.benchmark.x = 1"), ErrorClass.FORBIDDEN_CALL),
        (net_with("__builtins__ = {}"), ErrorClass.FORBIDDEN_CALL),
        (net_with("nn.Linear.__module__ = 'x'"), ErrorClass.FORBIDDEN_CALL),
        (net_with("self.__module__ = 'x'"), ErrorClass.FORBIDDEN_CALL),
        (net_with("import types\n        c = types.CodeType"), ErrorClass.FORBIDDEN_CALL),
        (net_with("pass", "from types import CodeType\n" + HEADER), ErrorClass.FORBIDDEN_CALL),
        (net_with("pass", "import torch.hub\n" + HEADER), ErrorClass.FORBIDDEN_IMPORT),
        (net_with("pass", "from torch import hub\n" + HEADER), ErrorClass.FORBIDDEN_CALL),
        (net_with("pass", "from torch import load\n" + HEADER), ErrorClass.FORBIDDEN_CALL),
        (net_with("pass", "from . import x\n" + HEADER), ErrorClass.FORBIDDEN_IMPORT),
        (net_with("pass", "from torch.nn import *\n" + HEADER), ErrorClass.FORBIDDEN_IMPORT),
        (net_with("pass", "import torchvision\n" + HEADER), ErrorClass.FORBIDDEN_IMPORT),
        (net_with("pass", "import torch.utils.data\n" + HEADER), ErrorClass.FORBIDDEN_IMPORT),
        (net_with("pass", "import torch.nn.modules._x\n" + HEADER), ErrorClass.FORBIDDEN_IMPORT),
        (net_with("pass", "import numpy.lib\n" + HEADER), ErrorClass.FORBIDDEN_IMPORT),
        (net_with("pass", "from gc import get_objects\n" + HEADER), ErrorClass.FORBIDDEN_CALL),
        (net_with("import numpy as np\n        np.memmap('x')"), ErrorClass.FORBIDDEN_CALL),
        (net_with("import numpy as np\n        np.ctypeslib"), ErrorClass.FORBIDDEN_CALL),
        (net_with("import numpy as np\n        np.load('x.npy')"), ErrorClass.FORBIDDEN_CALL),
        (net_with("import numpy as np\n        np.zeros(2).ctypes"), ErrorClass.FORBIDDEN_CALL),
        (net_with("import gc\n        gc.get_referrers(self)"), ErrorClass.FORBIDDEN_CALL),
        (net_with("import enum\n        enum.bltns"), ErrorClass.FORBIDDEN_CALL),
        (
            net_with("import dataclasses\n        dataclasses.types.CodeType"),
            ErrorClass.FORBIDDEN_CALL,
        ),
        (net_with("import functools\n        functools.singledispatch"), ErrorClass.FORBIDDEN_CALL),
        # `input` the builtin, reached however the program tries
        (net_with("x = input('?')"), ErrorClass.FORBIDDEN_CALL),
        (net_with("pass") + "def f(x, input=input):\n    return x\n", ErrorClass.FORBIDDEN_CALL),
        (
            net_with("pass") + "def f():\n    global input\n    input = 1\n    return input\n",
            ErrorClass.FORBIDDEN_CALL,
        ),
        (net_with("pass") + "x = [c for c in input('?')]\n", ErrorClass.FORBIDDEN_CALL),
        (net_with("pass") + "class A:\n    input = 1\n    y = input\n", ErrorClass.FORBIDDEN_CALL),
        (
            # the walrus never ran: the module-level read falls back to builtins.input
            net_with("pass") + "y = [(input := 1) for _ in []] or input('?')\n",
            ErrorClass.FORBIDDEN_CALL,
        ),
        # re.compile is a regex; compile elsewhere is still the builtin or torch.compile
        (net_with("import re\n        self.compile()"), ErrorClass.FORBIDDEN_CALL),
        (
            net_with("p = compile('a')", "from re import compile\n" + HEADER),
            ErrorClass.FORBIDDEN_CALL,
        ),
        (net_with("import re\n        re.copyreg"), ErrorClass.FORBIDDEN_CALL),
        # a namedtuple's __annotations__: identifier keys, a program's own class, checked values
        (
            net_with("pass") + "T.__annotations__ = {\"a=__import__('os')\": int}\n",
            ErrorClass.FORBIDDEN_CALL,
        ),
        (net_with("pass") + "T.__annotations__ = {'a': eval('1')}\n", ErrorClass.FORBIDDEN_CALL),
        (net_with("pass") + "nn.Module.__annotations__ = {'a': int}\n", ErrorClass.FORBIDDEN_CALL),
        (net_with("pass") + "T.__annotations__ = dict(a=int)\n", ErrorClass.FORBIDDEN_CALL),
        # annotations: a function's may name any type, never call; a class's are read back
        (net_with("pass") + "def f(x: exec('1')):\n    return x\n", ErrorClass.FORBIDDEN_CALL),
        (net_with("pass") + "def f(x) -> (lambda: 1):\n    return x\n", ErrorClass.FORBIDDEN_CALL),
        (net_with("pass") + "def f(x: torch.load):\n    return x\n", ErrorClass.FORBIDDEN_CALL),
        (
            net_with("pass") + "class A:\n    x: torch.utils.data.DataLoader = None\n",
            ErrorClass.FORBIDDEN_CALL,
        ),
        (
            net_with("pass")
            + "def f(x: torch.utils.data.DataLoader):\n    return f.__annotations__\n",
            ErrorClass.FORBIDDEN_CALL,
        ),
        (net_with("eval('1')"), ErrorClass.FORBIDDEN_CALL),
        (net_with("exec('x=1')"), ErrorClass.FORBIDDEN_CALL),
        (net_with("open('/etc/passwd')"), ErrorClass.FORBIDDEN_CALL),
        (net_with("f = compile"), ErrorClass.FORBIDDEN_CALL),
        (net_with("__import__('os')"), ErrorClass.FORBIDDEN_CALL),
        (net_with("g = globals()"), ErrorClass.FORBIDDEN_CALL),
        (net_with("torch.load('w.pt')"), ErrorClass.FORBIDDEN_CALL),
        (net_with("torch.save(self, 'w.pt')"), ErrorClass.FORBIDDEN_CALL),
        (net_with("torch.from_file('x', size=3)"), ErrorClass.FORBIDDEN_CALL),
        (net_with("torch.hub.load('a', 'b')"), ErrorClass.FORBIDDEN_CALL),
        (net_with("torch.ops.load_library('x.so')"), ErrorClass.FORBIDDEN_CALL),
        (net_with("torch.utils.cpp_extension.load_inline('x', '')"), ErrorClass.FORBIDDEN_CALL),
        (net_with("torch.os.system('id')"), ErrorClass.FORBIDDEN_CALL),
        (net_with("torch._C._get_tracing_state()"), ErrorClass.FORBIDDEN_CALL),
        (net_with("torch.distributions.Normal(0, 1)"), ErrorClass.FORBIDDEN_CALL),
        (net_with("nn.modules.module.torch.serialization.pickle"), ErrorClass.FORBIDDEN_CALL),
        (net_with("torch.compile(self)"), ErrorClass.FORBIDDEN_CALL),
        (net_with("t = torch"), ErrorClass.FORBIDDEN_CALL),
        (net_with("x = [torch][0]"), ErrorClass.FORBIDDEN_CALL),
        (net_with("getattr(torch, 'o' + 's')"), ErrorClass.FORBIDDEN_CALL),
        (net_with("getattr(self, '_' + '_class__')"), ErrorClass.FORBIDDEN_CALL),
        (net_with("getattr(self, name)"), ErrorClass.FORBIDDEN_CALL),
        (net_with("setattr(nn, 'Linear', None)"), ErrorClass.FORBIDDEN_CALL),
        (net_with("f = getattr"), ErrorClass.FORBIDDEN_CALL),
        (net_with("x = ().__class__.__mro__[1].__subclasses__()"), ErrorClass.FORBIDDEN_CALL),
        (net_with("g = self.forward.__globals__"), ErrorClass.FORBIDDEN_CALL),
        (net_with("s = '__globals__'"), ErrorClass.FORBIDDEN_CALL),
        (net_with("s = '{0.forward}'.format(self)"), ErrorClass.FORBIDDEN_CALL),
        (net_with("s = ('{' + '}').format(self)"), ErrorClass.FORBIDDEN_CALL),
        (net_with("e = self.x.gi_frame.f_globals"), ErrorClass.FORBIDDEN_CALL),
        (net_with("self.x = x.numpy().tofile('out')"), ErrorClass.FORBIDDEN_CALL),
        (net_with("torch.set_num_threads(64)"), ErrorClass.FORBIDDEN_CALL),
        (net_with("import typing\n        typing.get_type_hints(Net)"), ErrorClass.FORBIDDEN_CALL),
        (
            net_with("pass", "import operator\n" + HEADER) + "f = operator.attrgetter('a')\n",
            ErrorClass.FORBIDDEN_CALL,
        ),
        (net_with("pass") + "def __reduce__(self):\n    return 1\n", ErrorClass.FORBIDDEN_CALL),
        (net_with("pass") + "def f():\n    return torch.sys\n", ErrorClass.FORBIDDEN_CALL),
        # a use above the import line is still a module chain
        (
            "def f():\n    return torch.distributions\n" + net_with("pass"),
            ErrorClass.FORBIDDEN_CALL,
        ),
        # patching library code
        (net_with("nn.Module.parameters = lambda s: iter(())"), ErrorClass.FORBIDDEN_CALL),
        (net_with("torch.Tensor.numel = len"), ErrorClass.FORBIDDEN_CALL),
        (net_with("del torch.relu"), ErrorClass.FORBIDDEN_CALL),
        (net_with("type(self).forward = None"), ErrorClass.FORBIDDEN_CALL),
        (net_with("self.fc.__class__.forward = None"), ErrorClass.FORBIDDEN_CALL),
        (net_with("setattr(nn.Linear, 'forward', None)"), ErrorClass.FORBIDDEN_CALL),
        (net_with("setattr(type(self), 'forward', None)"), ErrorClass.FORBIDDEN_CALL),
        (
            net_with("Linear.forward = None", "from torch.nn import Linear\n" + HEADER),
            ErrorClass.FORBIDDEN_CALL,
        ),
        (net_with("pass").replace("class Net", "class Model"), ErrorClass.CONTRACT_VIOLATION),
        (
            net_with("pass").replace("prm, device", "prm"),
            ErrorClass.CONTRACT_VIOLATION,
        ),
        (
            net_with("pass").replace("def forward(self, x)", "def fwd(self, x)"),
            ErrorClass.CONTRACT_VIOLATION,
        ),
        (
            net_with("pass").replace("class Net(nn.Module)", "class Net"),
            ErrorClass.CONTRACT_VIOLATION,
        ),
        ("class Net(:\n", ErrorClass.SYNTAX_ERROR),
        ("x = 1\x00\n", ErrorClass.SYNTAX_ERROR),
        ("x = " + "-" * 300_000 + "1\n", ErrorClass.TOO_LARGE),
    ],
)
def test_rejections(code, error_class):
    with pytest.raises(CandidateRejected) as info:
        check_static(code, CFG)
    assert info.value.error_class is error_class, info.value.message


LEMUR_STYLE = """
import torch
import torch.nn as nn
from torch import optim


def supported_hyperparameters():
    return {'lr', 'momentum'}


class Net(nn.Module):
    def __init__(self, in_shape: tuple, out_shape: tuple, prm: dict, device) -> None:
        super().__init__()
        self.device = device
        self.features = nn.Sequential(nn.Conv2d(in_shape[1], 8, 3), nn.ReLU())
        self.fc = nn.Linear(8, out_shape[0])

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))

    def train_setup(self, prm):
        self.to(self.device)
        self.criteria = (nn.CrossEntropyLoss().to(self.device),)
        self.optimizer = optim.SGD(self.parameters(), lr=prm['lr'], momentum=prm['momentum'])
        self.scheduler = torch.optim.lr_scheduler.StepLR(self.optimizer, 5)
        self.scaler = torch.amp.GradScaler('cuda', enabled=torch.cuda.is_available())

    def learn(self, train_data):
        self.train()
        for inputs, labels in train_data:
            inputs, labels = inputs.to(self.device), labels.to(self.device)
            self.optimizer.zero_grad()
            loss = self.criteria[0](self(inputs), labels)
            loss.backward()
            nn.utils.clip_grad_norm_(self.parameters(), 3)
            self.optimizer.step()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
"""


def test_lemur_style_program_with_its_own_trainer_is_accepted_unchanged():
    tree = check_static(LEMUR_STYLE, CFG)
    assert {"train_setup", "learn"} <= {
        f.name for c in tree.body if getattr(c, "name", "") == "Net" for f in c.body
    }


@pytest.mark.parametrize(
    "code",
    [
        # a parameter, a local, a loop variable, a closure's variable called like a builtin
        net_with("pass").replace(
            "def forward(self, x):\n        return x",
            "def forward(self, input):\n        return input",
        ),
        net_with("pass") + "def f(xs):\n    for input in xs:\n        pass\n    return input\n",
        net_with("pass") + "def f(xs):\n    input = xs\n    return lambda: input\n",
        net_with("pass") + "def f(xs):\n    return [input for input in xs]\n",
        # a function's annotations name types the program may not call
        net_with("pass") + "def learn(self, train_data: torch.utils.data.DataLoader) -> None:\n"
        "    return None\n",
        net_with("pass") + "def f(x: 'torch.Tensor | None' = None) -> list[int] | None:\n"
        "    return None\n",
        # every function of an allowed pure module, and the allowed torch submodules
        net_with("import functools, operator\n        functools.reduce(operator.mul, [1, 2])"),
        net_with("pass", "from functools import reduce\n" + HEADER),
        net_with("pass", "import torch.nn.utils.spectral_norm as sn\n" + HEADER),
        net_with("pass", "from torch.nn.parallel import DataParallel\n" + HEADER),
        net_with("pass", "import torch.utils.checkpoint as cp\n" + HEADER),
        net_with("import numpy as np\n        k = int(np.prod([2, 3])) + int(np.sqrt(4.0))"),
        net_with("import numpy as np\n        r = np.linspace(0, 0.1, 4).tolist()"),
        net_with("import random\n        random.shuffle([1, 2])"),
        net_with("import gc\n        gc.collect()"),
        net_with("pass", "import os\nimport sys\nfrom types import FunctionType\n" + HEADER),
        net_with("pass", "from collections import *\n" + HEADER) + "C = OrderedDict\n",
        net_with("torch.backends.cudnn.benchmark = False"),
        net_with("where = self.fc.__module__ if hasattr(self, 'fc') else type(self).__qualname__"),
        net_with("import types\n        ok = isinstance(self.forward, types.MethodType)"),
        net_with("pass", "from types import FunctionType, SimpleNamespace\n" + HEADER),
        net_with("x = torch.jit.is_scripting() or torch.jit.is_tracing()"),
        net_with("pass", "from torch import jit\n" + HEADER),
        net_with("pass") + "class A(nn.Module):\n    __constants__ = ['a']\n",
        net_with("s = torch.cuda.amp.GradScaler(enabled=False)"),
        net_with("f = torch.nn.functional.no_such_function_in_this_torch"),
        net_with("import re\n        p = re.compile(r'^(.*)\\.w$').match('a.w')"),
        net_with("pass", "import collections\nfrom typing import Optional\n" + HEADER)
        + "T = collections.namedtuple('T', ['a', 'b'])\n"
        + "T.__annotations__ = {'a': torch.Tensor, 'b': Optional[torch.Tensor]}\n",
    ],
)
def test_lemur_constructs_are_accepted(code):
    check_static(code, CFG)


def test_refused_import_says_why():
    for module, words in (
        ("os", "processes"),
        ("torchvision", "download"),
        ("einops", "installed"),
    ):
        with pytest.raises(CandidateRejected) as info:
            check_static(net_with(f"x = {module}.x", f"import {module}\n" + HEADER), CFG)
        assert words in info.value.message and module in info.value.message


def test_refused_attribute_says_why():
    with pytest.raises(CandidateRejected) as info:
        check_static(net_with("import functools\n        f = functools.singledispatch"), CFG)
    assert "singledispatch" in info.value.message and "annotation" in info.value.message


def test_own_attributes_may_be_assigned():
    check_static(net_with("self.fc = nn.Linear(2, 2)\n        self.fc.bias = None"), CFG)
    check_static(
        net_with(
            "setattr(self, 'fc', nn.Linear(2, 2))\n        self.l = [1]\n        self.l[0] = 2"
        ),
        CFG,
    )


def test_deep_nesting_is_rejected_not_crashing():
    code = "x = " + "(" * 150 + "1" + ")" * 150 + "\n" + "y = " + "not " * 5000 + "1\n"
    with pytest.raises(CandidateRejected) as info:
        check_static(code, AdmissionConfig(max_source_bytes=1_000_000))
    assert info.value.error_class in (ErrorClass.SYNTAX_ERROR, ErrorClass.TOO_LARGE)


def test_source_size_limit_uses_config():
    code = net_with("pass")
    check_static(code, CFG)
    with pytest.raises(CandidateRejected) as info:
        check_static(code + "#" * 400, AdmissionConfig(max_source_bytes=300))
    assert info.value.error_class is ErrorClass.TOO_LARGE


def test_inherited_init_and_forward_satisfy_the_contract():
    code = HEADER + (
        "class Base(nn.Module):\n"
        "    def __init__(self, in_shape, out_shape, prm=None, device=None):\n"
        "        super().__init__()\n"
        "    def forward(self, x, *rest):\n"
        "        return x\n"
        "class Net(Base):\n"
        "    pass\n"
    )
    tree = check_static(code, CFG)
    assert any(getattr(n, "name", None) == "Net" for n in tree.body)


def test_message_names_the_line():
    code = net_with("pass") + "\n\nx = eval('1')\n"
    with pytest.raises(CandidateRejected) as info:
        check_static(code, CFG)
    assert info.value.message.startswith(f"line {code.count(chr(10))}:")


class _Finalizer:
    """A reference cycle whose finalizer runs Python code: the collector frees it in the
    middle of a parse, and the GIL can pass to another thread there."""

    def __init__(self) -> None:
        self.me = self

    def __del__(self) -> None:
        time.sleep(0)


def _parse_with_collections(errors: list[BaseException]) -> None:
    code = max(SEEDS.values(), key=len)
    for _ in range(20):
        garbage = [_Finalizer() for _ in range(300)]
        del garbage
        try:
            parse_source(code)
        except SystemError as exc:  # the CPython 3.11 race parse_source guards against
            errors.append(exc)


def test_parse_source_is_safe_from_many_threads() -> None:
    """CPython 3.11's AST constructor keeps one recursion counter per interpreter: four threads
    calling ast.parse this way raised "AST constructor recursion depth mismatch" in each of
    four runs here (and once in CI, in `llmnas seeds check`'s thread pool); parse_source
    serialises parses."""
    errors: list[BaseException] = []
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [
            threading.Thread(target=_parse_with_collections, args=(errors,)) for _ in range(4)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []


def test_no_module_parses_python_outside_parse_source() -> None:
    """Every parse in the packages goes through parse_source (the sandbox child runs in its
    own process, where one thread compiles the program)."""
    root = ROOT
    offenders = [
        f"{path.relative_to(root)}:{n}"
        for package in ("llmnas_dist", "db", "workers", "cluster")
        for path in sorted((root / package).rglob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if "ast.parse(" in line
        and path.relative_to(root).as_posix() != "llmnas_dist/program/source.py"
    ]
    assert offenders == []
