"""The delta grammar: every answer it accepts applies to its parent (by construction).

Random walks go through llguidance's own allowed-token masks (a byte-level vocabulary here;
the real SmolLM2 tokenizer in test_generation.py), and real difflib deltas of mutated seeds
are judged by the grammar and the codec. Parents: all seeds and adversarial ones.
"""

from __future__ import annotations

import ast
import random

import pytest
from fixtures import changes_only_net, net_body

from llmnas_dist.admission.delta import extract_delta, make_delta, patch
from llmnas_dist.admission.grammar import (
    MAX_FULL_LINES,
    MAX_INSERTED,
    MAX_PARENT_LINES,
    MAX_SITES,
    MAX_UNPLACED_ADDED,
    GrammarUnsupported,
    answer_grammar,
    delta_grammar,
    full_grammar,
    unique_lengths,
)
from llmnas_dist.admission.scopes import scope_names
from llmnas_dist.config import AdmissionConfig
from llmnas_dist.generation.constrain import (
    Constraint,
    accepts,
    byte_tokenizer,
    compile_grammar,
    random_walk,
)
from llmnas_dist.generation.mutations import mutate
from llmnas_dist.generation.prompts import delta_answer, training_delta
from llmnas_dist.program.static import canonicalize
from llmnas_dist.seeds import load_seeds
from llmnas_dist.vocab import decoding_of

SEEDS = load_seeds()

ADVERSARIAL = {
    "tabs_and_backslashes": (
        "import torch\nimport torch.nn as nn\n\n\nclass Net(nn.Module):\n"
        "\tdef __init__(self, in_shape, out_shape, prm, device):\n"
        "\t\tsuper().__init__()\n"
        '\t\tself.path = "a\\\\b\\tc"  # a "quoted" \\ comment\n'
        "\t\tself.fc = nn.Linear(in_shape[1], out_shape[0])\n\n"
        "\tdef forward(self, x):\n"
        "\t\treturn self.fc(x.mean(dim=(2, 3)))\n"
    ),
    "quotes_non_ascii_comments": (
        "# Réseau « simple » — with 'quotes' and \"double quotes\"\n"
        "import torch.nn as nn\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, in_shape, out_shape, prm, device):  # ünïcode\n"
        "        super().__init__()\n"
        "        self.name = 'ß∂ƒ'  # 漢字 <b>not a tag</b>\n"
        "        self.fc = nn.Linear(in_shape[1], out_shape[0])\n"
        "    def forward(self, x):\n"
        "        return self.fc(x.mean(dim=(2, 3)))\n"
    ),
    "repeated_lines": (
        "import torch.nn as nn\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self, in_shape, out_shape, prm, device):\n"
        "        super().__init__()\n"
        + "".join(
            f"        self.{n} = nn.Sequential(\n"
            "            nn.ReLU(),\n            nn.ReLU(),\n        )\n"
            for n in "abc"
        )
        + "\n\n\n"
        "    def forward(self, x):\n        return x\n"
        "    def forward2(self, x):\n        return x\n"
        "    def forward3(self, x):\n        return x\n"
    ),
    "long_250_lines": "import torch.nn as nn\n\nclass Net(nn.Module):\n"
    "    def __init__(self, in_shape, out_shape, prm, device):\n        super().__init__()\n"
    + "".join(
        f"        self.l{i} = nn.Conv2d({i % 7 + 1}, {i % 5 + 1}, 3)\n"
        + ("        x = x  # again\n" if i % 10 == 0 else "")
        for i in range(225)
    )
    + "    def forward(self, x):\n        return x\n",
}
PARENTS = {**SEEDS, **ADVERSARIAL}
TOKENIZER = byte_tokenizer()


def walk(parent: str, grammar: str, seed: int) -> tuple[str, bool]:
    constraint = compile_grammar(TOKENIZER, grammar)
    assert constraint.matcher is not None, constraint.note
    tokens, accepted = random_walk(constraint.matcher, TOKENIZER, random.Random(seed))
    return TOKENIZER.decode_str(tokens), accepted


@pytest.mark.parametrize("name", sorted(PARENTS))
def test_every_random_walk_the_grammar_accepts_applies(name):
    parent = PARENTS[name]
    grammar = delta_grammar(parent)
    accepted = 0
    for seed in range(6):
        text, ok = walk(parent, grammar, seed)
        if not ok:
            continue  # cut off by the walk's length limit: not an answer the grammar accepts
        accepted += 1
        assert accepts(grammar, text)
        patch(parent, extract_delta(text))  # raises if it does not apply
    assert accepted >= 3, f"only {accepted}/6 walks finished"


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_real_difflib_deltas_of_mutated_seeds(name):
    """The grammar accepts what the model is taught (training_delta) and what difflib
    writes with 3 lines of context where that is unique; whatever it accepts applies and
    gives exactly the child."""
    parent, rng = SEEDS[name], random.Random(name)
    grammar = delta_grammar(parent)
    taught = 0
    for _ in range(4):
        mutation = mutate(parent, rng)
        assert mutation is not None
        for answer in (
            delta_answer(training_delta(parent, mutation.child)),
            delta_answer(make_delta(parent, mutation.child)),
        ):
            if accepts(grammar, answer):
                assert patch(parent, extract_delta(answer)).code.strip() == (mutation.child.strip())
                taught += answer.count("@@ @@") > 0
    assert taught >= 3, "the grammar refused most taught deltas"


def test_blank_lines_are_bounded_in_number_and_width():
    """A sampler cannot spend its budget on blank lines: at most two in a row, each at most
    40 spaces wide, no tab (the codec ignores them, so nothing of the parent is lost)."""
    parent = SEEDS["plain_cnn"]
    grammar = delta_grammar(parent)
    line = next(x for x in parent.splitlines() if "nn.ReLU(inplace=True)" in x)

    def answer(gap: str) -> str:
        return delta_answer(f"--- baseline.py\n+++ improved.py\n@@ @@\n{gap}-{line}\n+x = 1\n")

    assert parent.count(line) == 1 and accepts(grammar, answer(""))
    assert accepts(grammar, answer(" " + " " * 40 + "\n" + "-\n"))
    assert not accepts(grammar, answer(" " + " " * 41 + "\n"))
    assert not accepts(grammar, answer(" \t\n")) and not accepts(grammar, answer("-  \t\n"))
    assert not accepts(grammar, answer("\n\n\n"))


def test_miscopied_context_and_ambiguous_or_empty_hunks_are_refused():
    parent = SEEDS["plain_cnn"]
    grammar = delta_grammar(parent)
    line = next(x for x in parent.splitlines() if "nn.ReLU(inplace=True)" in x)
    good = delta_answer(f"--- baseline.py\n+++ improved.py\n@@ @@\n-{line}\n+{line[:-1]}\n")
    assert accepts(grammar, good) == (parent.count(line) == 1)
    miscopied = good.replace("inplace=True", "inplace = True", 1)
    assert not accepts(grammar, miscopied)
    no_change = delta_answer(f"--- baseline.py\n+++ improved.py\n@@ @@\n {line}\n")
    assert not accepts(grammar, no_change)
    repeated = ADVERSARIAL["repeated_lines"]
    relu = "            nn.ReLU(),"
    ambiguous = delta_answer(f"--- baseline.py\n+++ improved.py\n@@ @@\n-{relu}\n")
    assert not accepts(delta_grammar(repeated), ambiguous)
    unique = ambiguous.replace("@@ @@\n", "@@ @@\n         self.b = nn.Sequential(\n")
    assert accepts(delta_grammar(repeated), unique)
    one_left = "self.b = nn.Sequential(\n            nn.ReLU(),\n        )"
    assert one_left in patch(repeated, extract_delta(unique)).code


@pytest.mark.parametrize("added", [MAX_UNPLACED_ADDED, MAX_UNPLACED_ADDED + 1])
def test_a_hunk_not_yet_placed_adds_at_most_max_unplaced_added_lines(added):
    """Below `super().__init__()`, written by Net and by a block class, a hunk cannot be
    placed (nor its lines judged) until a later parent line makes it unique: at most
    MAX_UNPLACED_ADDED lines are added before that line; where the anchor is unique, any
    number."""
    init = "        super().__init__()"
    parent = next(p for p in SEEDS.values() if p.count(init + "\n") >= 2)
    lines = parent.splitlines()
    after = lines[lines.index(init, lines.index("class Net(nn.Module):")) + 1]
    assert parent.count(after + "\n") == 1  # the line after Net's super().__init__() places it
    block = "".join(f"+        self.extra{i} = nn.Identity()\n" for i in range(added))
    head = "--- baseline.py\n+++ improved.py\n@@ @@\n"
    answer = delta_answer(f"{head} {init}\n{block} {after}\n")
    assert accepts(delta_grammar(parent), answer) == (added <= MAX_UNPLACED_ADDED)
    unique = delta_answer(f"{head} {after}\n{block}")
    assert accepts(delta_grammar(parent), unique)


def test_a_delta_removes_no_line_that_defines():
    """The outline stays the parent's: `def forward` (or a `class`) is never a removed line;
    the statement below it may be."""
    parent = SEEDS["plain_cnn"]
    lines = parent.splitlines()
    forward = next(x for x in lines if x.strip().startswith("def forward"))
    body = lines[lines.index(forward) + 1]
    head = "--- baseline.py\n+++ improved.py\n@@ @@\n"
    assert not accepts(delta_grammar(parent), delta_answer(f"{head}-{forward}\n-{body}\n"))
    assert accepts(delta_grammar(parent), delta_answer(f"{head} {forward}\n-{body}\n"))
    net = "class Net(nn.Module):"
    assert not accepts(delta_grammar(parent), delta_answer(f"{head}-{net}\n+class Net2:\n"))


def test_added_lines_that_would_break_the_codec_are_refused():
    parent = SEEDS["plain_cnn"]
    grammar = delta_grammar(parent)
    first = parent.splitlines()[0]
    frame = "<delta>\n--- baseline.py\n+++ improved.py\n@@ @@\n {first}\n+{added}\n</delta>"
    for added in ("x = 1 < 2 > 1", "        y = f(x, [1, {'a': ')'}])", "", "def f(x):"):
        assert accepts(grammar, frame.format(first=first, added=added)), added
    for added in ("x = '</delta>'", "```", "++ y", "a\rb", "x = '\u2028'"):
        assert not accepts(grammar, frame.format(first=first, added=added)), added
    # canonical form (as prompts show parents): one statement per line, four spaces a level
    for added in ("x = f(1", "x = 'a", "x = 1  # a comment", "x = \\", "  x = 1", " x = 1"):
        assert not accepts(grammar, frame.format(first=first, added=added)), added
    # adjacent strings that open a triple quote (measured, 2026-12-05: `"""- baseline.py"""`)
    for added in ('y = f(x)"""- a"""', "y = '''a'''"):
        assert not accepts(grammar, frame.format(first=first, added=added)), added
    assert accepts(grammar, frame.format(first=first, added="y = 'a' 'b' + ''"))


def test_an_added_line_may_be_a_parent_line_but_holds_no_triple_quote():
    """A rule that refused parent lines only at their end made the model go on writing the
    same line into junk (measured, 2026-12-05: 4 of 24 deltas); adjacent strings opened a
    triple quote that never closed (measured)."""
    parent = CANONICAL["plain_cnn"]
    grammar = delta_grammar(parent)
    lines = [x for x in parent.splitlines() if x.strip()]
    at = lines.index("        self.device = device")
    frame = "<delta>\n--- baseline.py\n+++ improved.py\n@@ @@\n {0}\n+{1}\n {2}\n</delta>"
    for added in lines[at + 1], lines[0], lines[-1], lines[at + 1] + " + 1":
        assert accepts(grammar, frame.format(lines[at], added, lines[at + 1])), added
    for added in ("        x = \"\"'''", '        s = """doc"""', "        y = 1 #"):
        assert not accepts(grammar, frame.format(lines[at], added, lines[at + 1])), added


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_writing_a_parent_line_as_an_added_line_never_fails_the_engine(name):
    """The masks along an added line that copies one of the parent's lines never fail: a
    rule against lines that start with the parent's attributes ran llguidance's lexer out
    of expressions right there (2 of 12 deltas of a default run of 2026-12-05, reproduced
    byte by byte on that run's parent)."""
    import llguidance.torch

    parent = canonicalize(SEEDS[name], AdmissionConfig())[0]
    anchors = [x for x in parent.splitlines() if x.strip()]
    matcher = compile_grammar(TOKENIZER, delta_grammar(parent)).matcher
    bitmask = llguidance.torch.allocate_token_bitmask(1, TOKENIZER.vocab_size)
    for line in sorted(anchors, key=len)[-4:]:
        copy = matcher.deep_copy()
        head = f"<delta>\n--- baseline.py\n+++ improved.py\n@@ @@\n {anchors[0]}\n+{line}"
        for byte in head.encode():
            llguidance.torch.fill_next_token_bitmask(copy, bitmask, 0)
            assert not copy.is_error(), (line, copy.get_error())
            assert copy.consume_token(byte), line
        assert copy.consume_token(ord("\n"))


def test_hunks_follow_each_other_in_parent_order():
    parent = SEEDS["plain_cnn"]
    lines = [x for x in parent.splitlines() if x.strip()]
    early, late = lines[0], lines[-1]
    body = "--- baseline.py\n+++ improved.py\n@@ @@\n-{a}\n+a = 1\n@@ @@\n-{b}\n+b = 2\n"
    grammar = delta_grammar(parent)
    assert accepts(grammar, delta_answer(body.format(a=early, b=late)))
    assert not accepts(grammar, delta_answer(body.format(a=late, b=early)))


def test_unique_lengths():
    assert unique_lengths(["a", "b", "a", "c"]) == [2, 1, 2, 1]
    assert unique_lengths(["x", "y", "x", "y"]) == [3, 2, None, None]


@pytest.mark.parametrize(
    "parent",
    ["\n\n   \n", 'x = "</delta>"\n', "s = '''\n```\n'''\n", "y = '</NN>'\n"],
)
def test_parents_without_a_grammar_say_why(parent):
    with pytest.raises(GrammarUnsupported):
        delta_grammar(parent)


CANONICAL = {name: canonicalize(code, AdmissionConfig())[0] for name, code in SEEDS.items()}
WHOLE = CANONICAL["plain_cnn"]


def whole(program: str) -> str:
    return f"<nn>\n{program}</nn>"


@pytest.mark.parametrize("name", sorted(CANONICAL))
def test_a_whole_program_is_an_edited_copy_of_its_parent(name):
    """The mutation operators' children (what CE updates teach as whole programs) are
    accepted under their parent's grammar when they change only `class Net` (the grammar
    leaves the rest as it is), refused otherwise; the unchanged parent and another seed are
    refused."""
    parent, rng = CANONICAL[name], random.Random(name)
    grammar = full_grammar(parent)
    inside = 0
    for _ in range(6):
        mutation = mutate(parent, rng)
        assert mutation is not None
        child = canonicalize(mutation.child, AdmissionConfig())[0]
        inside += changes_only_net(parent, child)
        assert accepts(grammar, whole(child)) == changes_only_net(parent, child)
    assert inside, "no mutation changed Net alone"
    assert not accepts(grammar, whole(parent))
    other = CANONICAL["vit_tiny" if name == "plain_cnn" else "plain_cnn"]
    assert not accepts(grammar, whole(other))


IN_LOOP = "            c_in = c_out\n"  # the last line of a loop in __init__
LAST_IMPORT = "import torch.nn as nn\n"
IMPORT_F = "import torch.nn.functional as F\n"
TOO_LONG_BODY = "                k = 1\n" * (MAX_INSERTED + 1)
WHOLE_MATCHER = compile_grammar(TOKENIZER, full_grammar(WHOLE))


def takes(constraint: Constraint, text: str) -> bool:
    """`accepts` with a grammar compiled once (building a full grammar takes ~0.3 s)."""
    assert constraint.matcher is not None, constraint.note
    matcher = constraint.copy().matcher
    return matcher.consume_tokens(list(text.encode())) and matcher.is_accepting()


def _edit(old: str, new: str) -> str:
    assert old in WHOLE
    return WHOLE.replace(old, new, 1)


@pytest.mark.parametrize(
    "child",
    [
        _edit("c_out = 32 * 2 ** i\n", "c_out = 48 * 2 ** i\n"),  # a line replaced
        _edit("        self.device = device\n", ""),  # left out
        _edit(IN_LOOP, IN_LOOP + "            k = 1\n"),  # in a loop
        _edit(IN_LOOP, IN_LOOP + "        k = 1\n"),  # after it
        _edit(
            "        self.features",
            "        if c_in > 8:\n            c_in = 8\n        self.features",
        ),
        _edit("for i in range(stages):", "for i in range(stages + 1):"),  # a loop rewritten
        _edit("        layers = []\n", "        layers = [] if a << 2 < b / 3 else 'é?'\n"),
        _edit(LAST_IMPORT, LAST_IMPORT + IMPORT_F),  # a seed's import the parent lacks
        WHOLE + "        y = 2\n",  # appended at the end's own level
        _edit(IN_LOOP, IN_LOOP + "            y = self.pool(layers[-1])\n"),  # the parent's names
        _edit("        self.device = device\n", "        self.apply(device)\n"),  # a call
        # two consecutive lines replaced
        _edit(
            "        layers = []\n        c_in = channels\n",
            "        layers = [1]\n        c_in = 2\n",
        ),
        # the only line of a block replaced
    ],
)
def test_edits_python_can_read_are_accepted(child):
    assert takes(WHOLE_MATCHER, whole(child))


def test_a_whole_program_differs_from_its_parent_in_at_most_max_sites_places():
    # seven lines apart: closer edits can also be read as one place (a replacement of the
    # lines between them, which copies them again), up to MAX_INSERTED inserted lines
    places = [
        "        super().__init__()",
        "            c_out = ",
        "        x = self.pool",
    ]
    child = WHOLE
    for n, place in enumerate(places, 1):
        child = child.replace(
            place, f"{place[: len(place) - len(place.lstrip())]}x = 1\n{place}", 1
        )
        assert takes(WHOLE_MATCHER, whole(child)) == (n <= MAX_SITES), n


def test_a_taught_input_block_s_statement_at_the_top_of_forward_opens_no_site():
    """MAX_SITES places changed, one of them a block made in Net.__init__: its taught
    statement may still go first in forward (up to one per input block), other lines may not,
    and elsewhere in forward it counts as a place."""
    init, top = "        super().__init__()", "        x = self.pool"
    made = f"{init}\n        self.input_norm = nn.BatchNorm2d(in_shape[-3])"
    second = "            c_out = "
    child = WHOLE.replace(init, made, 1).replace(second, f"            y = 2\n{second}", 1)
    assert takes(WHOLE_MATCHER, whole(child))
    norm, pre = "        x = self.input_norm(x)\n", "        x = x + self.pre_block(x)\n"
    for lines, taken in [(norm, True), (norm + pre, True), ("        x = 1\n", False)]:
        assert takes(WHOLE_MATCHER, whole(child.replace(top, lines + top, 1))) == taken, lines
    last = "        return self.head"
    assert not takes(WHOLE_MATCHER, whole(child.replace(last, norm + last, 1)))


@pytest.mark.parametrize(
    "child",
    [
        _edit("class Net(nn.Module):", "class Model(nn.Module):"),  # def/class lines stay
        _edit("in_shape, out_shape, prm, device", "in_shape, prm, device"),
        _edit("    def forward(self, x):", "    def forwards(self, x):"),
        _edit("    def forward(self, x):\n", ""),
        _edit("import torch\n", "import torch\nimport os\n"),  # imports
        _edit(IN_LOOP, IN_LOOP + "            import os\n"),
        _edit(IN_LOOP, IN_LOOP + "                k = 1\n"),  # too deep
        _edit(IN_LOOP, IN_LOOP + "    k = 1\n"),  # the next line would be too deep
        _edit(IN_LOOP, IN_LOOP + "          k = 1\n"),  # not in fours
        _edit(IN_LOOP, IN_LOOP + "            if k:\n"),  # no body
        _edit("        layers = []\n        c_in = channels\n", ""),  # two left out
        _edit("    return {'lr', 'momentum', 'dropout'}\n", ""),  # an empty block
        _edit("        self.device = device\n", "        x = '`'\n"),  # a fence could open
        _edit("        self.device = device\n", "        x = (1\n"),  # a bracket left open
        _edit("        self.device = device\n", "        x = 1  # a comment\n"),
        _edit("import math\n", "<- carriage quote\nimport math\n"),  # measured, see grammar.py
        _edit("        self.device = device\n", "        what is this?\n"),
        _edit("        self.device = device\n", "        x = 'é' + é\n"),
        _edit("        layers = []\n", "        layers = []\n        layers = []\n"[8:]),
        # measured (2026-12-04): untaught whole programs began with delta-like lines
        _edit("import math\n", "- train\n- forward\nimport math\n"),
        _edit("import math\n", "import os\nimport math\n"),  # an import that is no seed's
        _edit("import torch\n", "import torch\n" + IMPORT_F),  # not after the last import
        _edit(LAST_IMPORT, LAST_IMPORT + IMPORT_F * 2),
        _edit(LAST_IMPORT, LAST_IMPORT + "import math\n"),  # the parent imports it
        _edit("import math\n", "def f():\n    pass\nimport math\n"),  # above the imports
        # only `class Net` changes (measured, 2026-12-05: whole programs put Net's edits in
        # the first block class, reading `out_shape` there, and looped in the name)
        _edit("    return {", "    x = 1\n    return {"),
        _edit("    return {'lr', 'momentum', 'dropout'}", "    return {'lr', 'momentum'}"),
        # nothing at the top level (measured, 2026-12-05: invented top-level `def` lines looped)
        WHOLE + "\ndef swish(x):\n    return x * torch.sigmoid(x)\n",
        _edit("\nclass Net", "\nclass Gate(nn.Module):\n    pass\n\nclass Net"),
        # no new method (measured, 2026-12-05: up to 6 inserted `def forward` blocks in a row)
        _edit("    def forward(", "    def helper(self, x):\n        return x\n\n    def forward("),
        # nothing directly in a class body (measured: class attributes where methods were)
        _edit("\n    def forward(", "\n    gate = nn.Identity()\n\n    def forward("),
        # a name the program does not have (measured: `pre_block(...)`, `ICEF`)
        _edit("        self.device = device\n", "        x = pre_block(x)\n"),
        _edit(IN_LOOP, IN_LOOP + "            c_in = ICEF\n"),
        WHOLE + "\n\nx = 3\n",  # a top-level statement
        WHOLE + "if x:\n    y = 1\n",  # a top-level block other than def or class
        _edit("import torch\n", ""),  # an import left out
        _edit("        self.device = device\n", "        post - processing\n"),  # no call
        _edit("        self.device = device\n", "        Ending\n"),
        # an inserted block holds at most MAX_INSERTED lines
        _edit(IN_LOOP, IN_LOOP + "            if c_in:\n" + TOO_LONG_BODY),
    ],
)
def test_edits_that_break_the_program_or_its_outline_are_refused(child):
    assert child != WHOLE
    assert not takes(WHOLE_MATCHER, whole(child))


def test_a_parent_without_net_is_edited_anywhere():
    parent = "class Block(nn.Module):\n\n    def forward(self, x):\n        return x\n"
    child = parent.replace("        return x", "        x = x + 1\n        return x")
    assert accepts(full_grammar(parent), whole(child))
    with_net = parent + "\nclass Net(nn.Module):\n\n    def forward(self, x):\n        return x\n"
    assert not accepts(full_grammar(with_net), whole(with_net.replace(parent, child)))


def test_the_full_grammar_frames_the_answer():
    child = _edit("        self.device = device\n", "")
    grammar = full_grammar(WHOLE)
    assert accepts(grammar, whole(child))
    assert not accepts(grammar, whole(child) + " trailing")
    assert not accepts(grammar, f"```python\n{child}```")
    assert not accepts(grammar, f"<nn>\n{child.rstrip()}</nn>")  # </nn> starts a line
    assert "\n\n    def forward" in child and "\n\n        x = " not in child
    assert accepts(grammar, whole(child.replace("\n\n    def forward", "\n    def forward")))
    # a blank line only before a definition or the end, as canonical form places them: after
    # one, the model wrote `def forward` a level too deep and looped in the name (measured)
    assert not accepts(grammar, whole(child.replace("\n        x = ", "\n\n        x = ", 1)))
    inserted = "\n\n        y = 1\n\n    def forward"
    assert not accepts(grammar, whole(child.replace("\n\n    def forward", inserted)))
    assert accepts(grammar, whole(child.replace("\n\n    def forward", inserted[1:])))
    # blank lines are empty, as canonical form's (untaught whole programs filled 68-107
    # lines of one 1,024-token answer with spaces), and one at a time (measured, 2026-12-05:
    # two after nearly every line of an answer)
    for blank in ("\n  \n", "\n\n\n"):
        assert not accepts(
            grammar, whole(child.replace("\n        x = ", blank + "        x = ", 1))
        )
        assert not accepts(
            grammar, whole(child.replace("\n\n    def forward", blank + "    def forward"))
        )


_STATEMENTS = [
    "x = 1",
    "y = self.pool(x)",
    "layers += [nn.ReLU()]",
    "return x",
    "z = {'a': (1, [2])}",
    "k = f(a, b=')')",
    "pass",
    "if x:",
    "for i in range(2):",
    "with torch.no_grad():",
    "else:",
    "x = (1",
    "import os",
    "y = 2  # note",
]


def _random_child(parent: str, rng: random.Random) -> str:
    """A random edit of the lines of `parent`'s `class Net` body (what the grammar may
    change): copied, left out, replaced or preceded by random statements at random
    indentation (many of them invalid Python on purpose)."""
    lines = parent.splitlines()
    body = net_body(lines)
    out = []
    for i, line in enumerate(lines):
        roll = rng.random() if i in body else 1.0
        while roll < 0.02:
            out.append("    " * rng.randrange(4) + rng.choice(_STATEMENTS))
            roll = rng.random()
        if roll < 0.04:
            continue
        if roll < 0.06:
            indent = len(line) - len(line.lstrip())
            out.append(" " * indent + rng.choice(_STATEMENTS))
            continue
        out.append(line)
    return "\n".join(out) + "\n"


@pytest.mark.parametrize("name", sorted(CANONICAL))
def test_every_random_edit_the_full_grammar_accepts_is_python(name):
    """Valid by construction: whatever edited copy the grammar accepts parses; random edits
    (mostly invalid) probe it, and enough of them are accepted to mean something."""
    parent, rng = CANONICAL[name], random.Random(name)
    grammar = compile_grammar(TOKENIZER, full_grammar(parent))
    accepted = 0
    for _ in range(150):
        child = _random_child(parent, rng)
        if child != parent and takes(grammar, whole(child)):
            accepted += 1
            ast.parse(child)  # raises if it is not Python
    assert accepted >= 5, f"only {accepted}/150 random edits accepted"


def test_the_grammar_of_an_answer_falls_back_with_its_reason():
    parent = CANONICAL["plain_cnn"]
    assert answer_grammar("full", parent) == (full_grammar(parent), None)
    assert answer_grammar("delta", parent) == (delta_grammar(parent), None)
    assert answer_grammar("delta", ADVERSARIAL["long_250_lines"])[0] is not None
    too_long = "".join(f"x{i} = {i}\n" for i in range(MAX_PARENT_LINES + 1))
    grammar, why = answer_grammar("delta", too_long)
    assert grammar is None and f"grammar's limit of {MAX_PARENT_LINES}" in (why or "")
    grammar, why = answer_grammar("delta", 'x = "</delta>"\n')
    assert grammar is None and "end tag" in (why or "")


def test_the_largest_parent_stays_inside_the_engines_default_limits():
    """vLLM's matchers use llguidance's default limits: a parent at MAX_PARENT_LINES must
    not trip them (Earley items per row, lexer expressions) at a hunk's start."""
    parent = "".join(
        f"    self.l{i} = nn.Conv2d({i % 7 + 1}, 8, 3)\n" for i in range(MAX_PARENT_LINES)
    )
    constraint = compile_grammar(TOKENIZER, delta_grammar(parent))
    assert constraint.matcher is not None, constraint.note
    head = f"<delta>\n--- baseline.py\n+++ improved.py\n@@ @@\n\n-{parent.splitlines()[-1]}\n"
    assert constraint.matcher.consume_tokens(list(head.encode())), constraint.matcher.get_error()
    assert not constraint.matcher.is_error()


def test_decoding_names():
    assert [decoding_of(c) for c in (True, False, None)] == [
        "constrained",
        "unconstrained",
        "unrecorded",
    ]


def test_a_parent_the_full_grammar_cannot_copy_says_why():
    """Not canonical form (tabs), an end tag, or too long: the answer is then sampled
    freely, with the reason recorded."""
    for parent, why in [
        (ADVERSARIAL["tabs_and_backslashes"], "fours of spaces"),
        ('x = "</nn>"\n', "end tag"),
        ("".join(f"x{i} = {i}\n" for i in range(MAX_FULL_LINES + 1)), "limit"),
        ("def f(:\n    pass\n", "not Python"),
    ]:
        grammar, note = answer_grammar("full", parent)
        assert grammar is None and why in (note or "")


def test_an_inserted_line_reads_the_names_the_program_has():
    init = WHOLE.splitlines().index("    def __init__(self, in_shape, out_shape, prm, device):")
    names = scope_names(WHOLE)[init + 1]
    # the parent's parameters, locals, classes and imports; builtins; what IMPORTS may add
    assert {"in_shape", "c_out", "layers", "Net", "nn", "range", "super", "F", "i"} <= names
    assert not {"pre_block", "ICEF", "os", "print", "def"} & names


def test_an_inserted_line_reads_the_names_of_its_own_function():
    """Per scope (measured, 2026-12-05: whole programs read `device`, `c_in`, `out_shape` of
    `Net.__init__` in other methods and failed to build)."""
    forward = "    def forward(self, x):\n"
    for line, ok in [
        ("        x = F.relu(x)", True),
        ("        x = x * len(self.head)", True),
        ("        x = x[:, :c_in]", False),  # a local of __init__
        ("        x = x.to(device)", False),  # a parameter of __init__
        ("        x = x + supported_hyperparameters", True),  # a module-level name
    ]:
        child = _edit("        return self.head(", line + "\n        return self.head(")
        assert takes(WHOLE_MATCHER, whole(child)) == ok, line
    in_init = _edit(
        "        self.pool =",
        "        self.gate = nn.Linear(c_in, c_in, device=device)\n        self.pool =",
    )
    assert takes(WHOLE_MATCHER, whole(in_init))
    assert forward in WHOLE


def test_net_s_methods_read_the_attributes_net_has_or_is_taught():
    """Besides `__init__`, Net's methods read `self.X` only for an X the parent's Net has or
    the warm start teaches (measured, 2026-12-05: `self.drop` of a block class copied into
    `Net.forward`, an invented `self.down`). Other classes and `__init__` are as before."""
    for line, ok in [
        ("        x = self.features(x)", True),
        ("        x = x + self.pre_block(x)", True),  # TAUGHT_ATTRIBUTES
        ("        x = x * float(self.training)", True),
        ("        x = self.head[0](x)", True),
        ("        x = self.drop(x)", False),
        ("        x = x + self.down(x)", False),
        ("        x = self.features.get(self)", False),  # `self` alone is no value here
        ("        x = selfish(x)", False),
    ]:
        child = _edit("        return self.head(", line + "\n        return self.head(")
        assert takes(WHOLE_MATCHER, whole(child)) == ok, line
    in_init = _edit("        self.pool =", "        self.down = nn.Identity()\n        self.pool =")
    assert takes(WHOLE_MATCHER, whole(in_init))
    scopes = scope_names(WHOLE)
    forward = WHOLE.splitlines().index("    def forward(self, x):") + 1
    assert {"self.features", "self.head", "self.pool", "self.post_block"} <= scopes[forward]
    init = WHOLE.splitlines().index("    def __init__(self, in_shape, out_shape, prm, device):")
    assert "self" not in scopes[forward] and "self" in scopes[init + 1]


def test_a_line_that_makes_an_attribute_of_net_is_rewritten_never_left_out():
    """Measured (2026-12-05): `self.linear = nn.Linear(...)` written as `self.linear(...)`,
    and `forward` failed on the attribute no line made."""
    pool = "        self.pool = nn.AdaptiveAvgPool2d(1)\n"
    assert pool in WHOLE
    gate = "        self.gate = nn.Identity()\n"
    for new, ok in [
        ("", False),  # left out
        ("        self.pool(1)\n", False),  # a call in its place
        (gate, False),  # another attribute in its place
        ("        self.pool = nn.AdaptiveMaxPool2d(1)\n", True),
        ("        self.pool=nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(1))\n", True),
        ("        self.pool = nn.AdaptiveMaxPool2d(1)\n" + gate, True),
        (pool + gate, True),  # copied, then a line inserted
    ]:
        assert takes(WHOLE_MATCHER, whole(_edit(pool, new))) == ok, new


def test_scope_names_are_a_function_s_own_its_enclosing_ones_and_the_module_s():
    program = (
        "import torch.nn as nn\nLIMIT = 3\n\nclass Block(nn.Module):\n    width = 4\n\n"
        "    def __init__(self, c_in):\n        super().__init__()\n        kept = c_in\n\n"
        "        def inner(zed):\n            return zed + kept\n\n"
        "    def forward(self, x):\n        return x\n"
    )
    scopes = scope_names(program)
    lines = program.splitlines()
    at = {
        name: lines.index(next(x for x in lines if f"def {name}(" in x)) + 1
        for name in ("__init__", "inner", "forward")
    }
    assert {"c_in", "kept", "LIMIT", "Block", "nn", "range"} <= scopes[at["__init__"]]
    assert {"zed", "c_in", "kept"} <= scopes[at["inner"]]  # a closure reads its enclosing names
    assert {"x", "LIMIT"} <= scopes[at["forward"]]
    assert not {"c_in", "kept", "zed", "width", "__init__"} & scopes[at["forward"]]
    assert "width" not in scopes[at["__init__"]]  # a class body's names are not a method's
    assert {"LIMIT", "Block"} <= scopes[0] and not {"c_in", "kept"} & scopes[0]


def test_the_full_grammar_of_the_largest_parent_stays_inside_the_engines_limits():
    parent = "class Net(nn.Module):\n\n    def __init__(self):\n" + "".join(
        f"        self.l{i} = nn.Conv2d({i % 7 + 1}, 8, 3)\n" for i in range(MAX_FULL_LINES - 2)
    )
    constraint = compile_grammar(TOKENIZER, full_grammar(parent))
    assert constraint.matcher is not None, constraint.note
    lines = parent.splitlines(keepends=True)
    head = "<nn>\n" + "".join(lines[:5]) + "".join(lines[6:]) + "        x = 1\n</nn>"
    assert constraint.matcher.consume_tokens(list(head.encode()))
    assert not constraint.matcher.is_error()


def test_a_grammar_that_fails_at_its_mask_releases_its_row_with_a_note():
    """The engine can give up on a mask mid-answer (measured: llguidance's lexer ran out of
    expressions on one whole-program grammar): the row goes on unconstrained, its note says
    why, and the other rows keep their grammars."""
    import torch

    from llmnas_dist.generation.constrain import GrammarLogitsProcessor

    tokenizer = byte_tokenizer()
    failing = compile_grammar(tokenizer, 'start: "ab"')
    kept = compile_grammar(tokenizer, 'start: "ab"')
    assert failing.matcher is not None and kept.matcher is not None
    assert not failing.matcher.consume_token(ord("x"))  # now in error, as a failed mask is
    processor = GrammarLogitsProcessor([failing, kept], tokenizer.vocab_size, eos_id=0)
    scores = processor(torch.zeros((2, 1), dtype=torch.long), torch.zeros(2, tokenizer.vocab_size))
    assert failing.matcher is None and "grammar failed mid-answer" in (failing.note or "")
    assert torch.isfinite(scores[0]).all()  # the released row: every token
    assert torch.isfinite(scores[1]).sum() == 1 and scores[1, ord("a")] == 0  # the kept one


def test_the_seed_imports_a_parent_lacks_come_once_right_after_its_own():
    parent = (
        "import torch\nimport torch.nn as nn\n\n"
        "class Net(nn.Module):\n\n    def forward(self, x):\n        return x\n"
    )
    grammar = full_grammar(parent)
    head, rest = parent.split("\n\n", 1)
    both = "import math\nimport torch.nn.functional as F\n"
    assert accepts(grammar, whole(f"{head}\n{both}\n{rest}"))
    assert accepts(grammar, whole(f"{head}\nimport math\n\n{rest}"))
    assert not accepts(grammar, whole(f"{head}\n{both}{both}\n{rest}"))  # each once
    assert not accepts(
        grammar, whole(f"{head}\nimport torch.nn.functional as F\nimport math\n\n{rest}")
    )
    assert not accepts(grammar, whole(f"import math\n{parent}"))  # above the parent's own


@pytest.mark.integration
def test_the_model_s_tokens_walk_a_taught_whole_program_without_an_engine_error():
    """Byte-by-byte walks do not find every lexer limit: with the model's multi-byte tokens,
    a conditional expression that must have its `else` and keyword arguments after the
    positional ones (tried on 2026-12-05) ran llguidance's lexer out of expressions on
    every seed ("too many expressions constructed"), which byte-level tests passed."""
    from transformers import AutoTokenizer

    from llmnas_dist.generation.constrain import allowed_tokens, hf_tokenizer
    from llmnas_dist.generation.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))
    engine_tokens = hf_tokenizer(tokenizer)
    walked = 0
    for name, parent in sorted(CANONICAL.items()):
        rng = random.Random(name)
        children = [mutate(parent, rng) for _ in range(10)]
        child = next(
            c
            for m in children
            if m is not None
            and changes_only_net(parent, c := canonicalize(m.child, AdmissionConfig())[0])
        )
        matcher = compile_grammar(engine_tokens, full_grammar(parent)).matcher
        assert matcher is not None, name
        for token in tokenizer(whole(child), add_special_tokens=False)["input_ids"]:
            allowed_tokens(matcher, len(tokenizer))
            assert matcher.consume_tokens([token]), (name, matcher.get_error())
            walked += 1
        assert matcher.is_accepting(), name
    assert walked > 5_000
