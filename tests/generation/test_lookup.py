"""Prompt-lookup decoding (generation/lookup.py): the drafts, and real answers with SmolLM2
that match plain decoding's while taking fewer forward passes."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from llmnas_dist.admission.grammar import full_grammar
from llmnas_dist.evaluation.datasets import dataset_spec
from llmnas_dist.generation.constrain import accepts
from llmnas_dist.generation.draft_width import DraftWidth, PassCosts
from llmnas_dist.generation.engine import TransformersGenerator, chat_text
from llmnas_dist.generation.lookup import (
    FIXED_PAST_LIMIT,
    KIND_REDRAWS,
    LINE_REDRAWS,
    REPEAT_REDRAWS,
    REVERT_DRAW,
    decode_with_drafts,
    lookup_drafts,
    sampling_row,
)
from llmnas_dist.generation.prompts import parent_prompt
from llmnas_dist.generation.sampling import Sampling
from llmnas_dist.seeds import load_seeds


def test_drafts_follow_the_latest_earlier_occurrence_of_the_longest_suffix():
    ids = torch.tensor([5, 1, 2, 3, 9, 8, 7, 1, 2, 4, 4, 2, 3, 6, 1, 2, 3])
    # `1 2 3` occurs at 1 (then 9 8 7 ...); `2 3` also at 11 (then 6 ...): the longer wins
    assert lookup_drafts(ids, 3) == [9, 8, 7]
    assert lookup_drafts(torch.tensor([1, 2, 7, 1, 2, 8, 1, 2]), 2) == [8, 1]  # the latest
    assert lookup_drafts(torch.tensor([1, 2, 3, 4]), 5) == []  # nothing repeats
    assert lookup_drafts(torch.tensor([7, 7]), 5) == []  # one token is no context
    assert lookup_drafts(torch.tensor([1, 2, 9, 1, 2]), 5) == [9, 1, 2]  # up to the end


PARENT = load_seeds()["plain_cnn"]
PROMPT = parent_prompt("full", PARENT, dataset_spec("digits"), 0.9)


@pytest.fixture(scope="module")
def generator():
    return TransformersGenerator("smollm2-135m-instruct", dtype="float32")


def _decode(generator, sampling, draft_tokens):
    sampling = replace(sampling, draft_tokens=draft_tokens)
    return generator.generate([PROMPT], sampling, grammars=[full_grammar(PARENT)])[0]


class _FlatCosts(PassCosts):
    """Pass costs that ignore the clock: every width 50 ms."""

    def add(self, tokens: int, seconds: float) -> None:
        pass

    def of(self, tokens: int) -> float:
        return 0.05


@pytest.mark.integration
def test_greedy_answers_are_plain_decoding_s_and_take_fewer_passes(generator):
    """The same tokens as one-token-per-pass decoding (greedy, fp32), under the whole-program
    grammar; most of a copy is drafted, so passes are far fewer than tokens."""
    greedy = Sampling(temperature=0.0, max_new_tokens=160)
    plain, drafted = _decode(generator, greedy, 0), _decode(generator, greedy, 8)
    assert drafted.text == plain.text and drafted.output_tokens == plain.output_tokens
    assert drafted.constrained and drafted.text.startswith("<nn>\n")

    text = chat_text(generator.tokenizer, PROMPT)
    ids = generator.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids[0]
    row, _ = sampling_row(generator.tokenizer, ids, greedy, None, None, 0)
    eos = int(generator.tokenizer.eos_token_id)
    # every width costing the same (as where a wide pass costs no more): the widths follow
    # the copies alone, not this machine's load (timed, a loaded CI machine drafted 79 of 160)
    answer = decode_with_drafts(generator.model, ids, row, 160, 8, eos, _FlatCosts())
    assert answer.drafted > len(answer.tokens) / 2
    assert answer.passes < len(answer.tokens) / 2


@pytest.mark.integration
def test_a_whole_program_runs_to_its_parent_s_length_plus_the_headroom(generator):
    """Greedy: at a budget of 40 tokens the answer is cut there; with a headroom, the
    parent's length plus it is the budget (the parent passed as the driver passes it), and
    the same answer goes on past 40."""
    greedy = Sampling(temperature=0.0, max_new_tokens=40, draft_tokens=8)
    grammar = [full_grammar(PARENT)]
    cut = generator.generate([PROMPT], greedy, grammars=grammar, parents=[PARENT])[0]
    roomy = replace(greedy, parent_headroom=80)  # a budget of at least 80
    longer = generator.generate([PROMPT], roomy, grammars=grammar, parents=[PARENT])[0]
    assert cut.output_tokens == 40
    assert longer.output_tokens > 40 and longer.text.startswith(cut.text)


@pytest.mark.integration
def test_sampled_answers_keep_the_grammar_the_seed_and_the_end_tag(generator):
    sampling = Sampling(temperature=0.8, max_new_tokens=700, seed=3)
    first, again = _decode(generator, sampling, 8), _decode(generator, sampling, 8)
    assert first.text == again.text
    assert first.constrained
    if first.text.endswith("</nn>"):  # finished: the grammar accepts the whole answer
        assert accepts(full_grammar(PARENT), first.text)
    else:  # cut by the token budget or stopped early, with the reason
        assert first.output_tokens == 700 or "decoding stopped" in (first.grammar_note or "")
    other = _decode(generator, Sampling(temperature=0.8, max_new_tokens=700, seed=4), 8)
    assert other.text != first.text


def test_only_whole_programs_are_drafted():
    """Deltas copy less and decode faster batched (bench/generation_bench.py drafts)."""
    from llmnas_dist.config import GenerationConfig

    cfg = GenerationConfig(draft_tokens=8)
    assert Sampling.from_config(cfg, mode="full").draft_tokens == 8
    assert Sampling.from_config(cfg, mode="delta").draft_tokens == 0
    with pytest.raises(ValueError, match="draft_tokens"):
        Sampling(draft_tokens=-1)


def _forced(vocab: int, token: int) -> torch.Tensor:
    """Logits under which greedy sampling picks `token` wherever the grammar allows it."""
    logits = torch.full((vocab,), -1e4)
    logits[token] = 1e4
    return logits


@pytest.fixture(scope="module")
def tokenizers():
    from transformers import AutoTokenizer

    from llmnas_dist.generation.constrain import hf_tokenizer
    from llmnas_dist.generation.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))
    return tokenizer, hf_tokenizer(tokenizer)


def _net_lines() -> tuple[list[str], int]:
    """The canonical parent's lines and the index of the line after Net's super().__init__()."""
    from llmnas_dist.config import AdmissionConfig
    from llmnas_dist.program.static import canonicalize

    lines = canonicalize(PARENT, AdmissionConfig())[0].split("\n")
    net = lines.index("class Net(nn.Module):")
    return lines, lines.index("        super().__init__()", net) + 1


def _redrawing_row(tokenizers, mode: str = "full", target=None, limit: int = 16):
    from llmnas_dist.admission.grammar import answer_grammar
    from llmnas_dist.generation.constrain import compile_grammar

    tokenizer, ll_tokenizer = tokenizers
    lines, _ = _net_lines()
    parent = "\n".join(lines)
    constraint = compile_grammar(ll_tokenizer, answer_grammar(mode, parent)[0])
    sampling = Sampling(temperature=0.0, max_new_tokens=4000, redraw_limit=limit)
    prompt = torch.tensor([1, 2])
    row, _ = sampling_row(tokenizer, prompt, sampling, constraint, ll_tokenizer, 0, parent, target)
    return row


def _feed(row, tokenizers, text: str, out: list[int]) -> int | None:
    """Force `text`'s tokens through the row (each must be one its grammar allows) until a
    redraw: then cut `out` back and return how many tokens it kept."""
    tokenizer, ll_tokenizer = tokenizers
    for token in tokenizer(text, add_special_tokens=False).input_ids:
        assert row.pick(_forced(ll_tokenizer.vocab_size, token)) == token
        out.append(token)
        keep = row.redraw(out)
        if keep is not None:
            del out[keep:]
            return keep
    return None


@pytest.mark.integration
def test_a_line_faulty_at_every_draw_sends_the_redraw_one_line_back(tokenizers):
    """A copied line that reads names whose binding the answer left out (`height` and
    `width`, from the parent's `channels, height, width = in_shape[-3:]`): a copy has no
    parent line to revert to, so it is drawn again, then the line before it."""
    tokenizer, _ = tokenizers
    lines, _ = _net_lines()
    bind = next(n for n, line in enumerate(lines) if "= in_shape[-3:]" in line)
    before = "<nn>\n" + "\n".join(lines[:bind] + lines[bind + 1 : bind + 2]) + "\n"
    faulty = lines[bind + 2] + "\n"
    assert "height" in faulty
    row, out = _redrawing_row(tokenizers), []
    assert _feed(row, tokenizers, before + faulty, out) is not None
    for _ in range(LINE_REDRAWS - 1):  # the same line again, redrawn each time
        rest = (before + faulty)[len(tokenizer.decode(out)) :]
        assert _feed(row, tokenizers, rest, out) is not None
    rest = (before + faulty)[len(tokenizer.decode(out)) :]
    assert _feed(row, tokenizers, rest, out) is not None  # spent: one line further back
    assert tokenizer.decode(out).count("\n") == before.count("\n") - 1
    assert [f.line for f in row.faults] == [before.count("\n") + 1] * (LINE_REDRAWS + 1)


@pytest.mark.integration
def test_a_whole_program_s_line_faulty_again_is_written_as_its_parent_s_line(tokenizers):
    """Drawn the first time again, the faulty changed line is sampled; drawn the second
    time (REVERT_DRAW), it is written as the parent's line it stands for, whatever the
    model's logits say (here flat: greedy would pick the grammar's first allowed token)."""
    tokenizer, ll_tokenizer = tokenizers
    lines, at = _net_lines()
    before = "<nn>\n" + "\n".join(lines[:at]) + "\n"
    faulty = "        x = nn.Conv2d(1, padding=1, 3)\n"
    row, out = _redrawing_row(tokenizers), []
    for draw in range(REVERT_DRAW):
        rest = (before + faulty)[len(tokenizer.decode(out)) :]
        assert _feed(row, tokenizers, rest, out) is not None, draw
    assert tokenizer.decode(out).count("\n") == before.count("\n")
    for _ in range(60):
        out.append(row.pick(torch.zeros(ll_tokenizer.vocab_size)))
        if tokenizer.decode(out).endswith("\n"):
            break
    assert tokenizer.decode(out) == before + lines[at] + "\n"


@pytest.mark.integration
def test_a_line_that_runs_away_is_drawn_again_before_it_ends(tokenizers):
    tokenizer, _ = tokenizers
    lines, at = _net_lines()
    before = "<nn>\n" + "\n".join(lines[:at]) + "\n"
    runaway = "        x = " + "+".join(["1"] * 300) + "\n"
    row, out = _redrawing_row(tokenizers), []
    assert _feed(row, tokenizers, before + runaway, out) is not None
    kept = tokenizer.decode(out)
    assert row.faults[0].kind == "runaway" and "1+1" not in kept
    assert kept.count("\n") == before.count("\n")  # back at the start of the line


@pytest.mark.integration
def test_a_faulty_line_is_taken_back_with_its_grammar_and_drawn_again(tokenizers):
    """The real tokenizer and whole-program grammar, the Row of sampling_row driven token by
    token: a line with a positional argument after a keyword one ends; the row goes back to
    the start of that line (the grammar too: it then takes the parent's own line)."""
    tokenizer, _ = tokenizers
    lines, at = _net_lines()
    before = "<nn>\n" + "\n".join(lines[:at]) + "\n"
    faulty = "        x = nn.Conv2d(1, padding=1, 3)\n"
    row, out = _redrawing_row(tokenizers), []
    assert _feed(row, tokenizers, before + faulty + lines[at] + "\n", out) is not None
    assert row.faults[0].kind == "syntax" and row.faults[0].line == before.count("\n") + 1
    kept = tokenizer.decode(out)
    assert kept.count("\n") == before.count("\n") and "padding=1, 3" not in kept
    # the grammar went back too: it takes the parent's own line from where the answer stands
    assert _feed(row, tokenizers, (before + lines[at] + "\n")[len(kept) :], out) is None
    assert tokenizer.decode(out) == before + lines[at] + "\n"


@pytest.mark.integration
def test_a_delta_s_added_line_that_adds_a_fault_is_drawn_again(tokenizers):
    """The delta grammar and the parent: an added Conv2d without its kernel size."""
    tokenizer, _ = tokenizers
    lines, at = _net_lines()
    head = "<delta>\n--- baseline.py\n+++ improved.py\n@@ @@\n " + lines[at - 1] + "\n"
    row, out = _redrawing_row(tokenizers, "delta"), []
    assert _feed(row, tokenizers, head + "+        self.extra = nn.Conv2d(8, 8)\n", out)
    assert row.faults[0].kind == "call" and "kernel_size" in row.faults[0].why
    assert tokenizer.decode(out).count("\n") == head.count("\n")
    fixed = head + "+        self.extra = nn.Conv2d(8, 8, 3)\n"
    assert _feed(row, tokenizers, fixed[len(tokenizer.decode(out)) :], out) is None
    assert tokenizer.decode(out) == fixed


def test_a_spent_delta_line_is_drawn_again_from_its_hunk_s_header():
    from llmnas_dist.admission.partial import hunk_start

    answer = "<delta>\n--- a\n+++ b\n@@ @@\n x\n+y\n@@ @@\n z\n+w\n"
    assert hunk_start(answer, 9) == 7 and hunk_start(answer, 6) == 4
    assert hunk_start("<nn>\nimport torch\n", 2) is None


@pytest.mark.integration
@pytest.mark.parametrize("line_redraws", [16, 0])
def test_a_finished_delta_that_does_not_build_is_drawn_again_from_its_hunk(
    tokenizers, line_redraws
):
    """The delta grammar, the parent and a build target (mnist5k at 8x8): an input block
    called after the features, where the channels differ, is found when `</delta>` is
    written; the answer goes back to that hunk's header (the grammar too) and the hunk
    written again with the block before the features ends the answer; so also without
    line redraws (`redraw_builds` alone)."""
    from llmnas_dist.admission.finished import AnswerTarget
    from llmnas_dist.config import AdmissionConfig

    tokenizer, _ = tokenizers
    target = AnswerTarget((1, 8, 8), 10, AdmissionConfig())
    head = "<delta>\n--- baseline.py\n+++ improved.py\n@@ @@\n         self.device = device\n"
    head += "+        self.pre = nn.Conv2d(in_shape[-3], in_shape[-3], 1)\n"
    hunk = "@@ @@\n     def forward(self, x):\n-        x = self.pool(self.features(x))\n"
    deep = hunk + "+        x = self.pool(self.pre(self.features(x)))\n</delta>"
    row, out = _redrawing_row(tokenizers, "delta", target, line_redraws), []
    assert _feed(row, tokenizers, head + deep, out) is not None
    assert [f.kind for f in row.faults] == ["build"] and "channels" in row.faults[0].why
    assert tokenizer.decode(out) == head  # back to the second hunk's header
    placed = hunk + "+        x = self.pool(self.features(self.pre(x)))\n</delta>"
    assert _feed(row, tokenizers, placed, out) is None
    assert tokenizer.decode(out) == head + placed


def test_redrawing_deltas_decode_alone_with_drafts():
    """Deltas decode batched (faster) unless they redraw lines, which needs each alone."""
    from llmnas_dist.config import GenerationConfig

    cfg = GenerationConfig(redraw_limit=16, draft_tokens=8, redraw_deltas=True)
    assert Sampling.from_config(cfg, mode="full").redraw_limit == 16
    assert Sampling.from_config(cfg, mode="delta").redraw_limit == 16
    assert Sampling.from_config(cfg, mode="delta").draft_tokens == 8
    for off in (
        GenerationConfig(redraw_limit=16, draft_tokens=8),  # whole programs only
        GenerationConfig(redraw_limit=0, draft_tokens=8, redraw_deltas=True),
    ):
        assert Sampling.from_config(off, mode="delta").draft_tokens == 0
        assert Sampling.from_config(off, mode="delta").redraw_limit == 0
    with pytest.raises(ValueError, match="redraw_limit"):
        Sampling(redraw_limit=-1)


def test_a_whole_program_s_budget_makes_room_for_its_parent():
    """A whole program copies its parent and adds to it: its budget is at least the
    parent's tokens plus the headroom, within what max_model_len leaves; deltas keep theirs."""
    from llmnas_dist.config import GenerationConfig

    cfg = GenerationConfig(max_new_tokens=384, max_new_tokens_full=1024, full_headroom_tokens=320)
    whole = Sampling.from_config(cfg, mode="full")
    assert whole.budget(None, None) == 1024  # no parent
    assert whole.budget(600, None) == 1024  # it fits already
    assert whole.budget(870, None) == 1190
    assert whole.budget(870, 1100) == 1100  # max_model_len's room after the prompt
    assert whole.budget(870, 500) == 1024  # never below max_new_tokens (answer_fitting)
    assert Sampling.from_config(cfg, mode="delta").budget(870, None) == 384
    assert Sampling.from_config(GenerationConfig(), mode="full").budget(5000, None) == 1024
    with pytest.raises(ValueError, match="parent_headroom"):
        Sampling(parent_headroom=-1)


def test_whole_programs_redraw_lines_only_with_redraw_full_and_builds_decode_deltas_alone():
    from llmnas_dist.config import GenerationConfig

    cfg = GenerationConfig(redraw_limit=16, draft_tokens=8, redraw_full=False)
    whole = Sampling.from_config(cfg, mode="full")
    assert whole.redraw_limit == 0 and whole.draft_tokens == 8  # drafted, no line judged
    built = GenerationConfig(redraw_deltas=True, draft_tokens=8, redraw_builds=True)
    delta = Sampling.from_config(built, mode="delta")
    assert delta.redraw_limit == 0 and delta.draft_tokens == 8  # alone, to be built
    assert built.built("delta") and built.built("full")


def test_finished_programs_are_built_only_in_the_modes_redrawn():
    """redraw_builds follows redraw_full / redraw_deltas: the default builds both (whole
    programs since their changed lines revert to their parent's, default.yaml)."""
    from llmnas_dist.config import GenerationConfig, load_config

    deltas_only = GenerationConfig(redraw_builds=True, redraw_deltas=True, redraw_full=False)
    assert deltas_only.built("delta") and not deltas_only.built("full")
    whole_only = GenerationConfig(redraw_builds=True)  # redraw_full is on by default
    assert whole_only.built("full") and not whole_only.built("delta")
    assert Sampling.from_config(whole_only, mode="delta").draft_tokens == 0  # batched
    assert not GenerationConfig(redraw_full=True, redraw_deltas=True).built("full")
    default = load_config().generation
    assert default.built("delta") and default.built("full")


# the head of a one-hunk delta against `_net_lines`, up to its first changed line
HEAD = "<delta>\n--- baseline.py\n+++ improved.py\n@@ @@\n         for i in range(stages):\n"


@pytest.mark.integration
def test_a_finished_near_copy_goes_on_from_its_end_tag_s_line_without_ending(tokenizers):
    """A delta whose program is a near-copy of its parent (admission: not novel) is taken
    back to its end tag's line, and the next token may not start the end tag again."""
    from llmnas_dist.admission.finished import AnswerTarget
    from llmnas_dist.config import AdmissionConfig

    tokenizer, ll_tokenizer = tokenizers
    target = AnswerTarget((1, 8, 8), 10, AdmissionConfig())
    copy = HEAD
    copy += "-            c_out = 32 * 2 ** i\n+            c_out = 48 * 2 ** i\n</delta>"
    row, out = _redrawing_row(tokenizers, "delta", target), []
    assert _feed(row, tokenizers, copy, out) is not None
    assert [f.kind for f in row.faults] == ["novelty"]
    assert tokenizer.decode(out) == copy.removesuffix("</delta>")
    end = tokenizer("</", add_special_tokens=False).input_ids[0]
    token = row.pick(_forced(ll_tokenizer.vocab_size, end))
    assert token != end and not tokenizer.decode([token]).startswith("<")


@pytest.mark.integration
def test_a_near_copy_of_a_taught_child_goes_back_to_the_line_it_repeats(tokenizers):
    """A delta that writes again the edit a program near its parent made (what the model
    was fine-tuned on) goes back to that added line, which may not be written again there:
    the token that would write it is taken back."""
    from llmnas_dist.admission.finished import AnswerTarget, edit_lines
    from llmnas_dist.config import AdmissionConfig

    tokenizer, _ = tokenizers
    lines, _ = _net_lines()
    parent = "\n".join(lines)
    child = parent.replace("c_out = 32 * 2 ** i", "c_out = 48 * 2 ** i")
    target = AnswerTarget((1, 8, 8), 10, AdmissionConfig(), tried=edit_lines(parent, [child]))
    head = HEAD
    head += "-            c_out = 32 * 2 ** i\n"
    added = "+            c_out = 48 * 2 ** i\n"
    row, out = _redrawing_row(tokenizers, "delta", target), []
    assert _feed(row, tokenizers, head + added + "</delta>", out) is not None
    assert [f.kind for f in row.faults] == ["novelty"]
    assert tokenizer.decode(out) == head
    assert _feed(row, tokenizers, added, out) is not None  # the same line: drawn again
    assert [f.kind for f in row.faults] == ["novelty", "repeat"]
    assert tokenizer.decode(out) == head
    assert _feed(row, tokenizers, "+            c_out = 40 * 2 ** i\n", out) is None


MADE_AGAIN = "+            self.pre_block = nn.Sequential(nn.Conv2d(1, 8, 3), nn.ReLU())"


def _after_a_near_copy(tokenizers):
    """A delta row whose finished answer was a near-copy of a child of its parent that
    added `self.pre_block`: (the row, its tokens, now back at HEAD)."""
    from llmnas_dist.admission.finished import AnswerTarget, edit_lines
    from llmnas_dist.config import AdmissionConfig

    lines, _ = _net_lines()
    parent = "\n".join(lines)
    loop = "        for i in range(stages):\n"
    child = parent.replace(loop, loop + "            self.pre_block = nn.Identity()\n", 1)
    target = AnswerTarget((1, 8, 8), 10, AdmissionConfig(), tried=edit_lines(parent, [child]))
    row, out = _redrawing_row(tokenizers, "delta", target), []
    near_copy = HEAD + "+            self.pre_block = nn.Identity()\n</delta>"
    assert _feed(row, tokenizers, near_copy, out) is not None
    return row, out


@pytest.mark.integration
def test_a_block_made_again_is_taken_back_before_its_line_ends(tokenizers):
    """Once a near-copy named the block it repeated (`self.pre_block`, made by a program
    near the parent), a line that begins to make that attribute again goes back as soon as
    its `=` is written, whatever would follow: not at the line's end, tens of tokens later.
    Another attribute goes on."""
    tokenizer, _ = tokenizers
    row, out = _after_a_near_copy(tokenizers)
    assert [f.kind for f in row.faults] == ["novelty"] and tokenizer.decode(out) == HEAD
    assert _feed(row, tokenizers, MADE_AGAIN, out) is not None  # no newline written
    assert [f.kind for f in row.faults] == ["novelty", "repeat"]
    assert tokenizer.decode(out) == HEAD
    assert _feed(row, tokenizers, "+            self.post_block = nn.Identity()", out) is None


@pytest.mark.integration
@pytest.mark.parametrize("earlier, redrawn", [(REPEAT_REDRAWS - 1, True), (REPEAT_REDRAWS, False)])
def test_repeats_are_redrawn_at_most_repeat_redraws_times_an_answer(tokenizers, earlier, redrawn):
    """A block made again is taken back while the answer has repeat redraws left; after
    REPEAT_REDRAWS of them its line stays (admission judges the answer), though the
    answer's line-fault limit is far from spent."""
    from llmnas_dist.admission.partial import LineFault

    row, out = _after_a_near_copy(tokenizers)
    row.faults += [LineFault(5, "repeat", "earlier")] * earlier
    assert (_feed(row, tokenizers, MADE_AGAIN, out) is not None) == redrawn


LIMIT = 8  # an answer's redraw_limit in the tests that spend it
MISAPPLIED = (
    "<delta>\n--- baseline.py\n+++ improved.py\n@@ @@\n         super().__init__()\n"
    "+        self.input_norm = nn.BatchNorm2d(in_shape[-3])\n"
    "@@ @@\n     def forward(self, x):\n+        x = x * self.input_norm(x)\n"
)


@pytest.mark.integration
@pytest.mark.parametrize(
    "earlier, kind",
    [(KIND_REDRAWS["applied"], "applied"), (LIMIT, "applied"), (LIMIT + FIXED_PAST_LIMIT, "ended")],
)
def test_a_misapplied_block_s_line_is_fixed_past_the_answer_s_limit(tokenizers, earlier, kind):
    """`x = x * self.input_norm(x)` (the input gate's statement on the input BatchNorm) goes
    back to be written as taught even after the answer's 'applied' redraws (a build fault
    may have sent the fixed line back to its hunk's header, and the model wrote it mixed up
    again), and after its redraw_limit (writing it samples nothing), up to FIXED_PAST_LIMIT
    more; then the delta ends in its place (here its hunk, which changed nothing else, is
    dropped)."""
    from llmnas_dist.admission.partial import LineFault

    row, out = _redrawing_row(tokenizers, "delta", limit=LIMIT), []
    row.faults += [LineFault(5, "applied", "earlier")] * earlier
    assert _feed(row, tokenizers, MISAPPLIED, out) is not None
    assert row.faults[-1].kind == kind and "self.input_norm" in row.faults[-1].why


def _line_written_after_forward(row, tokenizers, out: list[int]) -> tuple[str, str]:
    """The answer taken back to `def forward`'s line, and the line the row writes next
    with flat logits (greedy would pick the grammar's first allowed token)."""
    tokenizer, ll_tokenizer = tokenizers
    back = tokenizer.decode(out)
    assert back.endswith("     def forward(self, x):\n")
    for _ in range(40):
        out.append(row.pick(torch.zeros(ll_tokenizer.vocab_size)))
        if tokenizer.decode(out).endswith("\n"):
            break
    return back, tokenizer.decode(out)[len(back) :]


@pytest.mark.integration
def test_a_misapplied_block_s_line_is_written_again_as_its_block_is_applied(tokenizers):
    """Drawn again, the mixed-up statement came back as often as not: the redraw writes the
    line as the block is made to be applied (`x = self.input_norm(x)`), whatever the model's
    logits say (here flat: greedy would pick the grammar's first allowed token)."""
    row, out = _redrawing_row(tokenizers, "delta"), []
    assert _feed(row, tokenizers, MISAPPLIED, out) is not None
    _, line = _line_written_after_forward(row, tokenizers, out)
    assert line == "+        x = self.input_norm(x)\n"


@pytest.mark.integration
def test_a_doubled_line_is_written_again_as_the_context_line_it_repeated(tokenizers):
    """`x = self.pool(self.features(x))` added, then copied from the parent after it (the
    features would run twice): the added line is written as that context line, whatever the
    logits say, and the answer goes on after it."""
    statement = "        x = self.pool(self.features(x))"
    doubled = "<delta>\n--- baseline.py\n+++ improved.py\n@@ @@\n     def forward(self, x):\n"
    doubled += f"+{statement}\n {statement}\n"
    row, out = _redrawing_row(tokenizers, "delta"), []
    assert _feed(row, tokenizers, doubled, out) is not None
    assert [f.kind for f in row.faults] == ["doubled"]
    _, line = _line_written_after_forward(row, tokenizers, out)
    assert line == f" {statement}\n"


RETURN = "        return self.head(torch.flatten(x, 1))"
PAST_RETURN = "<delta>\n--- baseline.py\n+++ improved.py\n@@ @@\n     def forward(self, x):\n"


@pytest.mark.integration
def test_a_line_after_forward_s_return_is_drawn_again(tokenizers):
    """The parent's last line is forward's `return`: a delta that goes on below it adds a
    statement that never runs ('unreachable'), drawn again."""
    tokenizer, _ = tokenizers
    head = PAST_RETURN + "-        x = self.pool(self.features(x))\n"
    head += "+        x = self.pool(self.features(x)) + 1\n " + RETURN + "\n"
    row, out = _redrawing_row(tokenizers, "delta"), []
    assert _feed(row, tokenizers, head + "+        x = x + 1\n", out) is not None
    assert [f.kind for f in row.faults] == ["unreachable"] and "`x = x + 1`" in row.faults[0].why
    assert tokenizer.decode(out) == head


def _written_next(row, tokenizers, out: list[int]) -> str:
    """What the row writes next with flat logits (greedy would pick the grammar's first
    allowed token), up to its end tag or 40 tokens."""
    tokenizer, ll_tokenizer = tokenizers
    back = tokenizer.decode(out)
    for _ in range(40):
        out.append(row.pick(torch.zeros(ll_tokenizer.vocab_size)))
        if "</delta>" in tokenizer.decode(out)[len(back) :]:
            break
    return tokenizer.decode(out)[len(back) :]


@pytest.mark.integration
@pytest.mark.parametrize("changed_before", [True, False])
def test_a_delta_whose_faulty_line_would_be_kept_ends_there(tokenizers, changed_before):
    """Past the answer's redraw_limit a faulty line was kept and the delta went on (to its
    token budget, in the default runs); now the delta's end tag is written in its place,
    whatever the logits say, or, where its hunk changed nothing before it (the tag is
    refused there), in place of that hunk's header: the hunk is dropped."""
    from llmnas_dist.admission.partial import LineFault
    from llmnas_dist.generation.lookup import ENDED

    tokenizer, _ = tokenizers
    lines, at = _net_lines()
    first = "@@ @@\n " + lines[at - 1] + "\n+        self.extra = nn.Identity()\n"
    hunk = "@@ @@\n     def forward(self, x):\n"
    if changed_before:
        replaced = "        x = self.pool(self.features(x))"
        hunk += f"-{replaced}\n+{replaced} + 1\n"
    head = "<delta>\n--- baseline.py\n+++ improved.py\n" + first + hunk
    row, out = _redrawing_row(tokenizers, "delta", limit=LIMIT), []
    row.faults += [LineFault(5, "name", "earlier")] * LIMIT
    assert _feed(row, tokenizers, head + "+        x = x + self.missing\n", out) is not None
    assert row.faults[-1].kind == ENDED and "attribute" in row.faults[-1].why
    kept = head if changed_before else head[: -len(hunk)]
    assert tokenizer.decode(out) == kept
    assert _written_next(row, tokenizers, out) == "</delta>"


@pytest.mark.integration
def test_a_delta_ends_once_then_keeps_its_faulty_lines(tokenizers):
    """Sent back after its end (a build fault, a near-copy), a delta that writes a faulty
    line again keeps it: the end is written once an answer."""
    from llmnas_dist.admission.partial import LineFault
    from llmnas_dist.generation.lookup import ENDED

    row, out = _redrawing_row(tokenizers, "delta", limit=LIMIT), []
    row.faults += [LineFault(5, "name", "earlier")] * LIMIT
    row.faults.append(LineFault(7, ENDED, "earlier"))
    assert _feed(row, tokenizers, PAST_RETURN + "+        x = x + self.missing\n", out) is None
    assert len(row.faults) == LIMIT + 1


@pytest.mark.integration
@pytest.mark.parametrize("spent, redrawn", [("build", True), ("novelty", False)])
def test_each_kind_of_end_fault_has_its_own_budget(tokenizers, spent, redrawn):
    """Three build redraws spent leave a near-copy its own three; three novelty redraws
    spent end them."""
    from llmnas_dist.admission.finished import AnswerTarget
    from llmnas_dist.admission.partial import LineFault
    from llmnas_dist.config import AdmissionConfig
    from llmnas_dist.generation.lookup import END_REDRAWS

    target = AnswerTarget((1, 8, 8), 10, AdmissionConfig())
    copy = HEAD
    copy += "-            c_out = 32 * 2 ** i\n+            c_out = 48 * 2 ** i\n</delta>"
    row, out = _redrawing_row(tokenizers, "delta", target), []
    row.faults += [LineFault(1, spent, "earlier")] * END_REDRAWS
    assert (_feed(row, tokenizers, copy, out) is not None) == redrawn


def _width(most, cost_of_tokens, shares):
    """A DraftWidth whose passes have cost `cost_of_tokens(m)` for every width, after
    passes keeping `shares` (kept, fed)."""
    costs = PassCosts()
    for m in range(1, most + 2):
        costs.add(m, cost_of_tokens(m))
    width = DraftWidth(most, costs)
    for kept, fed in shares:
        width.after(kept, fed, cost_of_tokens(fed + 1))
    return width


def test_draft_width_follows_the_copies_where_wide_passes_cost_little():
    flat = _width(16, lambda m: 0.05, [(8, 8), (16, 16)])
    assert flat.now == 16  # inside a copy, on a machine where width is free
    missed = _width(16, lambda m: 0.05 + 0.01 * m, [(0, 8), (0, 4), (1, 6), (0, 3)])
    assert missed.now <= 1  # drafts rarely kept: barely any drafted


def test_draft_width_stays_narrow_where_a_pass_costs_in_proportion_to_its_tokens():
    steep = _width(16, lambda m: 0.05 * m, [(8, 8), (16, 16)])
    assert steep.now == 0  # a draft can never pay for its own token's cost


def test_a_width_not_timed_yet_is_guessed_low_so_it_is_tried():
    costs = PassCosts()
    costs.add(9, 0.18)
    assert costs.of(1) == pytest.approx(0.02)  # scaled down from the wider pass
    costs.add(1, 0.05)
    assert costs.of(3) == 0.05  # as the widest timed width below it
    costs.add(1, 0.10)
    assert costs.of(1) == pytest.approx(0.05 + 0.2 * 0.05)  # a moving average


@pytest.mark.integration
def test_a_block_made_and_not_applied_is_applied_at_the_top_of_forward(tokenizers):
    """A whole program that made `self.input_norm` in Net.__init__ and goes on copying its
    parent's forward is taken back at forward's first statement, and the redraw writes the
    block's taught statement there, whatever the model's logits say (flat here); the
    parent's statement follows it."""
    tokenizer, ll_tokenizer = tokenizers
    lines, after_super = _net_lines()
    made = [*lines[:after_super], "        self.input_norm = nn.BatchNorm2d(in_shape[-3])"]
    forward = lines.index("    def forward(self, x):")
    copy = "<nn>\n" + "\n".join([*made, *lines[after_super : forward + 2]]) + "\n"
    row, out = _redrawing_row(tokenizers), []
    assert _feed(row, tokenizers, copy, out) is not None
    assert [f.kind for f in row.faults] == ["unapplied"]
    back = tokenizer.decode(out)
    head = back[: back.rindex("\n") + 1]  # the newline's token may hold the indentation
    assert head.endswith("    def forward(self, x):\n") and not back[len(head) :].strip()
    for _ in range(40):
        out.append(row.pick(torch.zeros(ll_tokenizer.vocab_size)))
        if tokenizer.decode(out).endswith("\n"):
            break
    assert tokenizer.decode(out) == head + "        x = self.input_norm(x)\n"
    assert _feed(row, tokenizers, lines[forward + 1] + "\n", out) is None  # then the copy


@pytest.mark.integration
def test_a_block_the_parent_made_is_not_applied_again(tokenizers):
    """A parent that makes `self.input_norm` itself and applies it later in forward: its
    copy is not taken back."""
    from llmnas_dist.admission.partial import LineJudge

    lines, after_super = _net_lines()
    forward = lines.index("    def forward(self, x):")
    parent_lines = [
        *lines[:after_super],
        "        self.input_norm = nn.BatchNorm2d(in_shape[-3])",
        *lines[after_super : forward + 2],
        "        x = self.input_norm(x)",
        *lines[forward + 2 :],
    ]
    judge = LineJudge("\n".join(parent_lines))
    answer = "<nn>\n" + "\n".join(parent_lines[: forward + 3]) + "\n"
    assert judge.fault(answer) is None
