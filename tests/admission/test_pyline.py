"""One line of Python as llguidance terminals: statements in, prose and broken code out."""

from __future__ import annotations

import pytest

from llmnas_dist.admission.pyline import MAX_DEPTH, python_line_terminals, scoped_line_terminals
from llmnas_dist.admission.scopes import module_names
from llmnas_dist.generation.constrain import accepts

GRAMMAR = (
    'start: LINE*\nLINE: (PY_SIMPLE | PY_OPEN) "\\n"\n' + "\n".join(python_line_terminals()) + "\n"
)

STATEMENTS = [
    "x = 1",
    "self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)",
    "return F.relu(out + self.shortcut(x))",
    "layers += [nn.ReLU()]",
    "stages = max(1, min(4, int(math.log2(max(1, min(height, width)))) - 1))",
    "x = x[:, None]",
    "y = {'a': (1, [2])}",
    "f = lambda x: x[1:]",
    "z = a if b else c",
    "super().__init__()",
    "channels, height, width = in_shape[-3:]",
    "return {'lr', 'momentum'}",
    "x = -x ** 2",
    "self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(c_in, out_shape[0]))",
    "pass",
    "a = b = [i * 2 for i in range(3) if i]",
    "dropout = float(dict(prm or {}).get('dropout', 0.1))",
    "x = x.view(x.size(0), -1)",
    "assert x is not None, 'no x'",
    "raise ValueError('bad')",
    "y = not x",
    "x = None",
    "c_out = 32 * 2 ** i",
    "k = f(*args, **kw)",
    "self.layers[0].weight = w",
    "a, *b = c",
    "x[1:2] += y",
    "s = 'a' 'b'",
    "n = 1e-05",
    "s = f'{x}'",
    "return",
    "print(x.shape)",  # an expression statement that is a call
    "self.layers[0].reset_parameters()",
    "nn.init.zeros_(self.head.weight)",
]
OPENINGS = [
    "for i in range(stages):",
    "if stride != 1 or c_in != c_out:",
    "def forward(self, x):",
    "def f(self, x: int=2, *rest, **kw) -> None:",
    "class Foo(nn.Module):",
    "with torch.no_grad():",
    "while x < 3:",
    "try:",
]
REFUSED = [
    "<- carriage quote",  # measured (see pyline's doc): prose a whole program held
    "esteday: <pre><code>",
    "Non-blocking pre-post aggregation pipeline with CUDA-7.5.",
    "carriage quote",
    "what is this?",
    "rax = xr. accelerating_ Ravara(rax)",
    "def class Net(nn.Module):",
    "def __init__(self, in_shape)",  # no colon
    "for = 16 * 256",  # a keyword as a name
    "import os",
    "from os import path",
    "else:",  # continues a block the line does not know
    "except ValueError:",
    "x = (1",
    "x = 1  # a comment",
    "x = 1 \\",
    "x =",
    "a + b = c",
    "-x = 1",
    # measured (2026-12-05): taught whole programs wrote augmented assignments to these
    "a, b += 1",
    "1 += x",
    "'literal' += x",
    "s = '''x'",  # adjacent strings without a space: a triple quote
    "x: f(y) = 2",  # annotations: admission refuses calls in them
    "return return",
    "s = '`'",
    "s = '</nn>'",
    # an expression statement other than a call does nothing; measured (2026-12-04): junk
    # whole programs wrote such lines
    "- train",
    "post-processing",
    "Ending",
    "x + 1",
    "self.fc",
    "f(x) + 1",
    "'a docstring'",
]


@pytest.mark.parametrize("line", STATEMENTS + OPENINGS)
def test_python_lines_are_accepted(line):
    assert accepts(GRAMMAR, line + "\n")


@pytest.mark.parametrize("line", REFUSED)
def test_prose_and_broken_lines_are_refused(line):
    assert not accepts(GRAMMAR, line + "\n")


def test_brackets_nest_up_to_the_limit():

    assert accepts(GRAMMAR, "x = " + "f(" * MAX_DEPTH + ")" * MAX_DEPTH + "\n")
    assert not accepts(GRAMMAR, "x = " + "f(" * (MAX_DEPTH + 1) + ")" * (MAX_DEPTH + 1) + "\n")


def _closed(readable: list[str]) -> str:
    terminals = "\n".join(python_line_terminals(readable))
    return f'start: LINE*\nLINE: (PY_SIMPLE | PY_OPEN) "\\n"\n{terminals}\n'


def test_a_closed_set_of_names_limits_what_a_line_reads_not_what_it_binds():
    grammar = _closed(["self", "x", "nn", "F", "c_in", "c", "range", "i"])
    for line in [
        "y = self.conv(x)",  # a new name bound, attributes free
        "self.gate = nn.Conv2d(c_in, c_in, 1, bias=False)",  # keywords free
        "for j in range(c):",
        "def helper(a, b=1):",  # parameters are bound
        "x = F.relu(x) + x[:, i]",
    ]:
        assert accepts(grammar, line + "\n"), line
    for line in [
        "x = pre_block(x)",  # an invented helper (measured, see READABLE_BUILTINS)
        "y = ICEF",
        "x = cx + 1",  # a prefix of a known name does not make it known
        "x = self.conv(c_in2)",
        "f(x)",
        "collections.deque(x).y = 1",  # a target's first name is read when trailers follow
        "y = z[0] = 1",
    ]:
        assert not accepts(grammar, line + "\n"), line


def test_a_made_up_name_is_short_and_prefix_operators_do_not_pile_up():
    """Measured (2026-12-05): whole programs looped inside a keyword-argument name and in
    `---- ----` until the loop detector stopped them."""
    grammar = _closed(["self", "x", "nn"])
    name32, name33 = "a" * 32, "b" * 33
    for line in [f"y = nn.Conv2d(x, {name32}=1)", f"self.{name32} = x", f"{name32} = -(not x)"]:
        assert accepts(grammar, line + "\n"), line
    for line in [f"y = nn.Conv2d(x, {name33}=1)", f"self.{name33} = x", "y = x ---- x"]:
        assert not accepts(grammar, line + "\n"), line
    assert accepts(grammar, "y = x - --x\n") and accepts(grammar, "y = not -x\n")


def test_a_readable_attribute_is_read_as_a_whole_and_its_name_alone_is_not():
    grammar = _closed(["self.head", "self.body", "x", "nn"])
    for line in ["y = self.head(x)", "y = self.body[0].weight", "self.head.bias = x"]:
        assert accepts(grammar, line + "\n"), line
    for line in ["y = self", "y = self.tail(x)", "y = self.heads(x)", "self.tail = x.y"]:
        assert not accepts(grammar, line + "\n"), line


@pytest.mark.parametrize(
    "names", [[], ["x", "not a name"], ["x", "1x"], ["x", "if"], ["x", "if.y"], ["a.b.c"]]
)
def test_readable_names_are_identifiers(names):
    with pytest.raises(ValueError, match="readable names"):
        python_line_terminals(names)


def test_a_module_is_read_only_through_an_attribute_and_never_assigned():
    terminals = "\n".join(python_line_terminals(["self", "x", "y", "F", "nn"], ["F", "nn"]))
    grammar = f'start: LINE*\nLINE: (PY_SIMPLE | PY_OPEN) "\\n"\n{terminals}\n'
    for line in ["x = F.relu(x)", "self.act = nn.ReLU()", "y = nn.functional.gelu(x)"]:
        assert accepts(grammar, line + "\n"), line
    # measured (2026-12-05): `F` or `nn` passed as a value, which admission refuses
    for line in ["x = F", "self.f = nn", "y = self.pool(x, F)", "F = x", "nn.Foo = x", "F(x)"]:
        assert not accepts(grammar, line + "\n"), line


def test_a_literal_takes_no_trailer():
    # measured (2026-12-05): a whole program called a number, `1.5(x)`, and looped on it
    for line in ["x = 1.5(x)", "y = None.x", "x = True[0]", "1(x)"]:
        assert not accepts(GRAMMAR, line + "\n"), line
    for line in ["x = 1.5 * y", "y = (1).bit_length()", "x = 'a'.join(y)"]:
        assert accepts(GRAMMAR, line + "\n"), line


def test_module_names_are_what_imports_bind_and_nothing_else_does():
    program = (
        "import torch\nimport torch.nn as nn\nimport numpy.linalg\nfrom torch import optim\n"
        "from torch.nn import functional as F\n\ndef f(math):\n    return math\n"
    )
    assert module_names(program) == {"torch", "nn", "numpy"}


def test_each_scope_s_lines_read_its_own_names():
    terminals = scoped_line_terminals([{"x", "a"}, {"y", "PY_READ"}], ["nn"])
    assert sum(t.startswith("PY_NAME:") for t in terminals) == 1  # shared
    grammar = (
        'start: "0 " LINE0* | "1 " LINE1*\nLINE0: PY_SIMPLE_S0 "\\n"\nLINE1: PY_SIMPLE_S1 "\\n"\n'
        + "\n".join(terminals)
        + "\n"
    )
    assert accepts(grammar, "0 z = nn.Conv2d(x, a)\n")
    assert not accepts(grammar, "0 z = y\n")
    assert accepts(grammar, "1 z = y\n")
    assert not accepts(grammar, "1 z = x\n")
    assert not accepts(grammar, "1 z = PY_READ\n")  # spells a terminal: left out
