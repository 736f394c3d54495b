"""Decoding an answer that mostly copies its prompt: prompt-lookup drafts, verified at once.

A whole program is an edited copy of the parent its prompt shows, and a delta's context
lines copy it too, so most of an answer's tokens already stand in the prompt. Each step
here looks up the answer's last few tokens in the prompt and the answer so far, drafts up
to `draft_tokens` tokens that followed them there, and feeds the pending token and the
drafts to the model in one forward pass: its logits give the distribution at every draft
position. Tokens are then sampled position by position exactly as plain decoding would
sample them (grammar mask, temperature, top-k, top-p); a draft is kept while it equals
the sampled token, and the first sampled token that differs ends the step (the cache
drops the rest). The answer's distribution is plain sampling's: only the number of
forward passes changes (Leviathan et al. 2023's check with a draft of probability one).
transformers' own prompt lookup does the same for batch 1, but (reading its code) filters
its drafts through the whole logits-processor list applied to equal dummy logits, where
top-k keeps only the first k token ids, so few drafts would survive at top-k 50.

One answer at a time: a batch of answers that copy different amounts cannot share a step.
The grammar's matcher consumes only tokens that were sampled under its mask.

Decoding one answer alone also lets it take a line back. With `Sampling.redraw_limit`, each
time a whole-program line ends, `admission.partial.LineJudge` looks for a syntax error the
grammar cannot rule out (a positional argument after a keyword one, `x if c` without
`else`: ruling them out in the grammar's line lexeme exhausted llguidance's lexer), a
read of a name that no line has bound there yet, or a call whose arguments do not fit
its callee (a made-up keyword of `nn.Conv2d`); the answer, its cache and its grammar go
back to the start of that line, and the line is sampled again (at most `LINE_REDRAWS`
times a line, `redraw_limit` times an answer; then the line stays and admission judges
it, or a delta ends in its place: `ENDED`). This samples from the model's distribution
restricted to lines without such faults, as the grammar's mask restricts tokens.

Given an `AnswerTarget` (`generation.redraw_builds`), the answer is also built in the
sandbox when its end tag is written, as admission will build it: where its program does not
build (channels, shapes) while its parent does, the answer goes back to the header of the
delta hunk that wrote the failing line (of a whole program: to that line) and goes on from
there. Where it builds but is a near-copy of an archived program near its parent (admission
would reject it as not novel), a delta that wrote an added line that one of those programs
holds and its parent does not (`AnswerTarget.tried`: a block that a child of this parent
already added, proposed again; lines compared by `line_key`, a line making `self.X` by the
attribute alone) goes back to the first such line, and such a line is a fault
wherever it is written again (a line making such an attribute as soon as its `=` is
written, `LineJudge.repeat_fault`: at most `REPEAT_REDRAWS` an answer); another near-copy
goes back to its end tag's line, and its next token may not start the end tag: it goes on.
At most `END_REDRAWS` such redraws an answer. The answers of one call are decoded one after
another and admitted only after the last: once one is finished, each later answer of the
call to the same parent holds its program as an archived near program (`tell_siblings`).
"""

from __future__ import annotations

import functools
import inspect
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

import torch

from llmnas_dist.admission.finished import AnswerTarget
from llmnas_dist.admission.grammar import DELTA_END
from llmnas_dist.admission.loops import MAX_LINE_CHARS
from llmnas_dist.admission.partial import (
    END_KINDS,
    LineFault,
    LineJudge,
    finished_program,
    hunk_start,
)
from llmnas_dist.admission.scopes import INPUT_BLOCKS, misapplied_blocks, taught_statement
from llmnas_dist.generation.constrain import Constraint, GrammarLogitsProcessor
from llmnas_dist.generation.draft_width import DraftWidth, PassCosts
from llmnas_dist.generation.early_stop import EarlyStop
from llmnas_dist.generation.sampling import Sampling
from llmnas_dist.program.source import parse_source

# the longest suffix of the answer looked up first; one token of context drafts too often
# from the wrong place (a `(` or a newline occurs everywhere). Measured on a whole program
# (convnext_tiny, warm-start adapter, 695 tokens): with suffixes of at most 4 tokens only 115
# drafts were kept in 579 passes (code repeats short runs such as `        self.`)
MAX_NGRAM = 16
MIN_NGRAM = 2
LINE_REDRAWS = 3  # draws of one line after its first, before the line is kept as it is
# draws after a finished answer did not build, and as many after it was a near-copy (each
# redraws a hunk, a program's tail, or goes on from the end tag). Each kind has its own:
# with one budget for both (2026-12-05 bench) 2 of 4 near-copies went on to a program that
# did not build and had no build redraw left
END_REDRAWS = 3
# 'repeat' redraws an answer (within its redraw_limit), then a repeated edit's line stays and
# admission judges the answer. Near an archive that holds every taught edit of a parent, the small
# model writes the same block again and again: a repeat run of the default (2026-12-07, 2-core
# AVX512-BF16 EPYC) redrew 7-12 repeats in 6 of its 15 deltas, 1 of those 6 admitted.
# bench/replay_bench.py --cycle 1 --samples 3 --calls on that run (15 answers an arm, the same
# seeds): 8 admitted in 296 s at 3 against 8 in 330 s unbounded (0.90x)
REPEAT_REDRAWS = 3
# ... and so do 'applied' faults (a taught block applied other than as taught,
# `admission.scopes.misapplied_blocks`): the model prefers its mixed-up statement. In the first
# default run with the fault (2026-12-07, 2-core AVX512-BF16 EPYC) 3 of 14 deltas redrew `x = x *
# self.input_norm(x)` 8-16 times; its children scored 0.003 below their parents (9), against 0.076
# (10) without the fault, 0.033 (9) with the bound. Drawn again, the line came back mixed up as
# often as not, so the redraw writes it as its block is applied (`_fixed_line`); the bound holds
# where the grammar refuses that line. Since the twelfth stop a line `_fixed_line` can write is
# written so whenever it comes back, within the answer's redraw_limit: a build fault sent it back
# to its hunk's header and the model wrote it mixed up again; in a default run that day (2-core
# AVX512-BF16 Xeon) 4 of 10 evaluated children had kept `x = x * self.pre_block(x)` after "3
# applied, 3 build" redraws and scored 0.078-0.148 below their parents
# 'unapplied': a whole program's forward going on without a block it made gets the block's statement
# written before it (`_fixed_line`), once per input block; where the grammar refuses it the model
# writes the same line again: before the grammar's APPLY it spent the answer's 16 redraws so
# (bench/replay_bench.py --mode full, 2026-12-07, 3 of 6 answers)
KIND_REDRAWS = {"repeat": REPEAT_REDRAWS, "applied": 3, "unapplied": len(INPUT_BLOCKS)}
# faults whose line is written as taught (`_fixed_line`), not drawn again ('doubled': as context)
FIXED_KINDS = ("applied", "unapplied", "doubled")
# ... past the answer's redraw_limit too, this many more (writing samples nothing): a default
# run's delta of 2026-12-07 (AVX2 EPYC) spent 16 on 12 'attribute' redraws and 4 fixed lines,
# kept `x = x * self.pre_block(x)` on its fifth, and scored 0.117 below its parent
FIXED_PAST_LIMIT = 4
# A whole program's changed line that faults again is written as its parent's line
# (`LineJudge.parent_line`) from its second redraw on: drawn again, the change came back the same.
# bench/replay_bench.py --mode full --set redraw_full=true on a default first run (2026-12-07,
# 2-core AMX Xeon, its 10 whole-program slots, 2 samples each): 5 of 20 answers failed to build on
# `channels, height, width = in_shape` (the parent's `in_shape[-3:]`), each after 3 build redraws of
# that line. With the revert (4 samples, 40 answers an arm): 3 of 40 failed so, 11 of 40 admitted,
# against 10 of 40 and 8 of 40 without redraws; with the revert and `in_shape`'s unpacking a line
# fault (admission/unpacks.py): 0 and 9 of 40 (they fail on other faults next: 14 of 40 were cut off
# by the token budget)
REVERT_DRAW = 2
BACKTRACK_LINES = 2  # how far before a faulty line redraws may go once it is spent
# A delta's faulty line that would be kept (the answer's or the line's redraws spent) is
# replaced by the delta's end tag, where the grammar allows it (once an answer), instead of
# kept with the answer going on: in a default first run of 2026-12-07 (2-core AMX Xeon) 4 of 14
# deltas were cut off by their 384-token budget after spending their redraws on lines that
# read blocks no line made (13-16 'attribute' faults), 2 of them adding statements after
# forward's `return` until the budget ran out; none was admitted. Not for 'repeat' faults,
# whose few redraws end with the line kept for admission to judge (REPEAT_REDRAWS)
ENDED = "ended"
# Redraws sample as the first draw did. Tried and not kept (2026-12-06, 2-core AVX2 EPYC,
# bench/replay_bench.py --cycle 3 --samples 4 on a default first run whose cycle-3 deltas
# drew `self.input_gate` again 7-8 times each): a redrawn line sampled hotter, top-p off,
# admitted 9 of 20 at 0.7 * (1 + 0.5 k) on the line's k-th redraw (4 answers ran out of
# tokens) and 8 of 20 at 1.05 after repeats and near-copies only, against 8 of 20 as is


def lookup_drafts(ids: torch.Tensor, max_drafts: int) -> list[int]:
    """Up to `max_drafts` tokens that followed the latest earlier occurrence of the longest
    suffix of `ids` (MAX_NGRAM down to MIN_NGRAM tokens) that occurs earlier; [] if none."""
    n_ids = ids.shape[0]
    for n in range(min(MAX_NGRAM, n_ids - 1), MIN_NGRAM - 1, -1):
        windows = ids[: n_ids - 1].unfold(0, n, 1)  # windows that end before the last token
        hits = (windows == ids[n_ids - n :]).all(dim=1).nonzero().flatten()
        if hits.numel():
            start = int(hits[-1]) + n
            return ids[start : start + max_drafts].tolist()
    return []


@dataclass
class Decoded:
    """One answer's tokens (end-of-sequence included when sampled) and how it was decoded:
    `passes` forward passes after the prompt's, `drafted` draft tokens kept, `redrawn` lines
    taken back and sampled again."""

    tokens: list[int]
    passes: int
    drafted: int
    redrawn: int = 0


@dataclass
class Row:
    """What decoding one answer needs besides the model: how to turn logits into a token
    (`pick`: mask, warp, sample, and feed the token to the grammar), how many of some
    drafts the grammar would take next (`allowed_prefix`), when the answer is over
    (`done`: the tokens so far), and where it goes back to draw a faulty line again
    (`redraw`: how many tokens to keep, its grammar already rewound; None: go on)."""

    pick: Callable[[torch.Tensor], int]
    allowed_prefix: Callable[[list[int]], int]
    done: Callable[[list[int]], bool]
    redraw: Callable[[list[int]], int | None] = lambda tokens: None
    faults: list[LineFault] = field(default_factory=list)  # the lines redrawn, in order

    def note(self) -> str | None:
        """What was redrawn, for the answer's record (None: nothing)."""
        if not self.faults:
            return None
        kinds = Counter(f.kind for f in self.faults)
        first = self.faults[0]
        counts = ", ".join(f"{n} {kind}" for kind, n in sorted(kinds.items()))
        return f"redrew {len(self.faults)} lines ({counts}; first: line {first.line}: {first.why})"


def decode_with_drafts(
    model: Any,
    prompt: torch.Tensor,
    row: Row,
    max_new_tokens: int,
    draft_tokens: int,
    eos: int,
    costs: PassCosts | None = None,
) -> Decoded:
    """Sample one answer to `prompt` (a 1-D tensor of ids) with prompt-lookup drafts (see
    the module doc). `row.pick` sees each position's logits in order, once per token kept."""
    from llmnas_dist.generation.kv_cache import answer_cache

    cache = answer_cache()
    kv = {_cache_keyword(model): cache, "use_cache": True}
    # the prompt's last position only: the LM head over all of a 770-token prompt's
    # positions was 11% of its prefill (bf16, 2-core AMX Xeon, 0.348 s against 0.308 s;
    # the last position's logits equal)
    with torch.inference_mode():
        logits = model(input_ids=prompt[None], logits_to_keep=1, **kv).logits[0, -1:]
    out: list[int] = []
    passes = drafted = redrawn = 0
    drafts: list[int] = []
    width = DraftWidth(draft_tokens, costs or PassCosts())
    seconds = 0.0
    while True:
        # logits[j] is the distribution after the pending token and drafts[:j]
        kept = 0
        for j in range(logits.shape[0]):
            token = row.pick(logits[j])
            out.append(token)
            keep = row.redraw(out)
            if keep is not None:  # back to the start of a faulty line: draw it again
                del out[keep:]
                redrawn += 1
                finished = False
                break
            finished = token == eos or len(out) >= max_new_tokens or row.done(out)
            if finished or j >= len(drafts) or token != drafts[j]:
                break
            kept += 1
        drafted += kept
        if finished:
            return Decoded(out, passes, drafted, redrawn)
        if passes:  # the first answer tokens came from the prompt's pass
            width.after(kept, len(drafts), seconds)
        ids = torch.cat([prompt, torch.tensor(out, dtype=prompt.dtype)])
        room = max_new_tokens - len(out)
        drafts = lookup_drafts(ids, min(width.now, room - 1)) if room > 1 else []
        drafts = drafts[: row.allowed_prefix(drafts)] if drafts else []
        if eos in drafts:
            drafts = drafts[: drafts.index(eos)]
        # the cache keeps the prompt and the answer but its last token (not fed yet)
        excess = cache.get_seq_length() - (ids.shape[0] - 1)
        if excess:
            cache.crop(-excess)
        step = torch.tensor([[out[-1], *drafts]], dtype=prompt.dtype)
        started = time.perf_counter()
        with torch.inference_mode():
            logits = model(input_ids=step, **kv).logits[0]
        seconds = time.perf_counter() - started
        passes += 1


def _cache_keyword(model: Any) -> str:
    """The forward argument that takes the KV cache: transformers 5 renamed
    `past_key_values` to `cache` (the old name warns, and goes in 5.40)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    names = inspect.signature(type(base).forward).parameters
    return "cache" if "cache" in names else "past_key_values"


def draw(scores: torch.Tensor, sampling: Sampling, generator: torch.Generator) -> int:
    """One token from `scores` (1 x vocab) as transformers samples it: temperature, top-k,
    top-p (a token is kept while the tokens above it hold less than top_p), then a
    multinomial draw; greedy at temperature 0. Computed on the top-k tokens only (the others
    have probability zero either way): sorting the whole vocabulary for top-p took most of
    the 4.7 ms a token that transformers' warpers cost here (SmolLM2, 49,152 tokens)."""
    if sampling.temperature == 0:
        return int(scores.argmax())
    scores = scores[0] / sampling.temperature
    values, index = scores.topk(min(sampling.top_k or scores.shape[0], scores.shape[0]))
    if sampling.top_p < 1:
        probs = values.softmax(-1)
        values = values.masked_fill(probs.cumsum(-1) - probs >= sampling.top_p, float("-inf"))
    return int(index[torch.multinomial(values.softmax(-1), 1, generator=generator)])


def sampling_row(
    tokenizer: Any,
    prompt: torch.Tensor,
    sampling: Sampling,
    constraint: Constraint | None,
    ll_tokenizer: Any,
    seed: int,
    parent: str | None = None,
    target: AnswerTarget | None = None,
) -> tuple[Row, EarlyStop]:
    """How one answer to `prompt` picks its tokens (the grammar's mask, then `draw`) and
    ends (an end tag, an early stop), and its EarlyStop (which says why it stopped early).
    `ll_tokenizer`: llguidance's view, for the mask's width; `seed` seeds this answer;
    `parent` is what the answer edits (its lines are judged, `Sampling.redraw_limit`),
    `target` what the finished answer must meet (built, compared; None: nothing)."""
    constraint = constraint or Constraint(None)
    eos = int(tokenizer.eos_token_id)
    grammar = None
    if constraint.matcher is not None:
        grammar = GrammarLogitsProcessor([constraint], ll_tokenizer.vocab_size, eos)
    generator = torch.Generator(device=prompt.device).manual_seed(seed)
    last = cast(torch.LongTensor, torch.zeros((1, 1), dtype=torch.long, device=prompt.device))
    stop = EarlyStop(
        tokenizer,
        prompt.shape[0],
        [constraint],
        syntax_error=sampling.stop_on_syntax_error,
        repeats=sampling.stop_on_repeats,
    )

    unended: list[torch.Tensor] = []  # tokens the next pick may not take (`_end_tokens`)
    forced: list[int] = []  # tokens the next picks take where the grammar allows (`_fixed_line`)

    def pick(logits: Any) -> int:
        scores = logits[None].float()
        masked = scores if grammar is None else grammar(last, scores)
        if forced and bool(torch.isfinite(masked[0, forced[0]])):
            last[0, 0] = token = forced.pop(0)
            return token
        forced.clear()  # the grammar refused the fixed line: the answer samples on
        if unended:  # a near-copy's end was taken back: it goes on, if the grammar lets it
            banned = masked.clone()
            banned[0, unended.pop().to(banned.device)] = float("-inf")
            masked = banned if bool(torch.isfinite(banned).any()) else masked
        token = draw(masked, sampling, generator)
        last[0, 0] = token  # the grammar's processor feeds it to the matcher next call
        return token

    def allowed_prefix(drafts: list[int]) -> int:
        matcher = constraint.matcher
        if matcher is None:
            return len(drafts)
        if matcher.is_stopped():
            return 0
        # the matcher takes the last picked token only at the next pick (the processor's
        # contract): validate from before it
        return max(0, int(matcher.validate_tokens([int(last[0, 0]), *drafts])) - 1)

    def done(tokens: list[int]) -> bool:
        tail = str(tokenizer.decode(tokens[-8:]))
        if any(s in tail for s in sampling.stop):
            return True
        if stop.active:
            ids = torch.cat([prompt, torch.tensor(tokens, dtype=prompt.dtype)])
            return bool(stop(ids[None], torch.empty(0))[0])
        return False

    row = Row(pick, allowed_prefix, done)
    if sampling.redraw_limit or target is not None:
        judge = LineJudge(parent, target)
        row.redraw = _line_redraw(
            tokenizer, constraint, last, sampling.redraw_limit, row.faults, judge, unended, forced
        )
    return row, stop


def tell_siblings(
    targets: list[AnswerTarget | None], parents: list[str | None], i: int, answer: str
) -> None:
    """Answer `i` of a call is finished: each later answer of the call to the same parent
    meets its program as it would an archived one (`AnswerTarget.with_sibling`), since
    none of the call's answers is admitted before all are decoded."""
    parent = parents[i]
    owed = {
        j: target
        for j, target in enumerate(targets)
        if j > i and target is not None and parents[j] == parent
    }
    if parent is None or not owed:
        return
    code = finished_program(answer, parent, next(iter(owed.values())).cfg.delta_fuzz)
    if code is None or code == parent:
        return
    for j, target in owed.items():
        targets[j] = target.with_sibling(code, parent)


def _line_redraw(
    tokenizer: Any,
    constraint: Constraint,
    last: torch.Tensor,
    limit: int,
    faults: list[LineFault],
    judge: LineJudge,
    unended: list[torch.Tensor],
    forced: list[int],
) -> Callable[[list[int]], int | None]:
    """The `Row.redraw` of the module doc: at each token that ends a line, the judge's
    verdict, and at every token, whether the line runs past any program line's length
    (`runaway_line`'s bound, where the early stop would end the answer) and, once a near-copy
    named the blocks it repeated, whether the line has begun to make one again
    (`LineJudge.repeat_fault`). For a fault within
    the limits the answer goes back to the start of the faulty line, or, once that line
    has been drawn `LINE_REDRAWS` times, of a line before it (up to `BACKTRACK_LINES`: the
    line that left out a binding is often the one before the read), and once those are
    spent too, of a delta's hunk (`hunk_start`); a finished answer that does not build goes
    back as `LineJudge.end_fault` says (its own budget; a near-copy's next token may not
    start an end tag, put in `unended` for `pick`); the grammar's matcher goes back with it
    (it has consumed every token but the last picked, which `last` holds for it) and the
    number of tokens to keep is returned."""
    newlines: list[int] = []  # per answer token: the newlines in its text
    line_chars: list[int] = []  # per answer token: the length of the line it ends in
    draws: dict[int, int] = {}  # answer line -> redraws so far

    def end_delta(tokens: list[int], fault: LineFault, answer: str) -> int | None:
        """The delta goes back to the start of the faulty line and writes its end tag there
        (`ENDED`, once an answer), or, where the grammar refuses the tag there (the line was
        its hunk's first change), in place of its hunk's header: the hunk is dropped. Where
        it refuses that too (the delta's first hunk), the hunk is drawn again from its
        header. None: the answer cannot go back (nothing changed)."""
        matcher = constraint.matcher
        cut, at, end = len(tokens), 0, []
        for line in dict.fromkeys([fault.line, hunk_start(answer, fault.line) or fault.line]):
            keep = _line_start(newlines, line)
            if not 0 < keep <= cut or (
                keep < cut and matcher is not None and not matcher.rollback(cut - keep)
            ):
                break
            cut, at = keep, line
            end = _line_tokens(tokenizer, tokens[:keep], DELTA_END)
            if end and (
                matcher is None or matcher.validate_tokens([tokens[keep - 1], *end]) > len(end)
            ):
                break
            end = []
        if cut == len(tokens):
            return None
        where = "its end tag written at " + (
            "its line" if at == fault.line else "its hunk's header"
        )
        why = (
            f"{where if end else 'its hunk drawn again'}: redraws spent ({fault.kind}: {fault.why})"
        )
        faults.append(LineFault(at, ENDED, why))
        judge.rewound(at)
        last[0, 0] = tokens[cut - 1]  # the matcher takes it at the next pick
        forced[:] = end
        return cut

    def redraw(tokens: list[int]) -> int | None:
        del newlines[len(tokens) - 1 :], line_chars[len(tokens) - 1 :]  # cut back since?
        text = str(tokenizer.decode(tokens[-1:]))
        newlines.append(text.count("\n"))
        before = line_chars[-1] if line_chars else 0
        line_chars.append(len(text) - text.rfind("\n") - 1 if newlines[-1] else before + len(text))
        answer = ""
        fault: LineFault | None = None
        if limit and line_chars[-1] > MAX_LINE_CHARS and before <= MAX_LINE_CHARS:
            why = f"the line ran past {MAX_LINE_CHARS} characters"
            fault = LineFault(sum(newlines) + 1, "runaway", why)
        elif newlines[-1] or ">" in text:  # a line ended, or maybe the answer's end tag
            answer = str(tokenizer.decode(tokens, skip_special_tokens=True))
            try:
                fault = judge.fault(answer) if newlines[-1] and limit else None
                fault = fault or judge.end_fault(answer)
            except RecursionError:  # nesting deeper than the judges walk: admission judges it
                fault = None
        elif limit and judge.watches_repeats:  # a repeated block, known before its line ends
            answer = str(tokenizer.decode(tokens, skip_special_tokens=True))
            fault = judge.repeat_fault(answer)
        if fault is None:
            return None
        line = fault.line
        fixed = (
            _fixed_line(tokenizer, answer, tokens[: _line_start(newlines, line)], fault)
            if fault.kind in FIXED_KINDS
            else []
        )
        while (
            not fixed
            and draws.get(line, 0) >= LINE_REDRAWS
            and line > max(2, fault.line - BACKTRACK_LINES)
        ):
            line -= 1
        if not fixed and draws.get(line, 0) >= LINE_REDRAWS and fault.kind != "runaway":
            line = hunk_start(answer, fault.line) or line
        keep = _line_start(newlines, line)
        matcher = constraint.matcher
        if fault.kind in END_KINDS:  # each kind of end fault has END_REDRAWS of its own
            spent = sum(f.kind == fault.kind for f in faults) >= END_REDRAWS
        else:  # line faults share `limit`; repeats and misapplied blocks have a few of it
            budget = limit + (FIXED_PAST_LIMIT if fixed else 0)
            spent = sum(f.kind not in END_KINDS for f in faults) >= budget or (
                (not fixed or fault.kind == "unapplied")
                and sum(f.kind == fault.kind for f in faults) >= KIND_REDRAWS.get(fault.kind, limit)
            )
        kept = spent or (not fixed and draws.get(line, 0) >= LINE_REDRAWS)
        ends = kept and fault.kind not in (*END_KINDS, "repeat") and "<delta>" in answer.lower()
        if ends and all(f.kind != ENDED for f in faults):
            ends_at = end_delta(tokens, fault, answer)
            if ends_at is not None:
                return ends_at
        if (
            kept
            or not 0 < keep < len(tokens)
            or (matcher is not None and not matcher.rollback(len(tokens) - keep))
        ):
            judge.keep(fault)
            return None
        draws[line] = draws.get(line, 0) + 1
        faults.append(fault)
        judge.rewound(line)
        last[0, 0] = tokens[keep - 1]  # the matcher takes it at the next pick
        if fault.kind == "novelty":
            unended.append(_end_tokens(tokenizer))
        forced[:] = fixed
        reverted = judge.parent_line(answer, line) if draws[line] >= REVERT_DRAW else None
        if not forced and reverted is not None:
            forced[:] = _line_tokens(tokenizer, tokens[:keep], reverted + "\n")
        return keep

    return redraw


def _fixed_line(tokenizer: Any, answer: str, kept: list[int], fault: LineFault) -> list[int]:
    """The tokens that write a taught block's line as its block is made to be applied
    (`taught_statement`), after the `kept` tokens: in place of a misapplied block's line
    ('applied': drawn again, it came back mixed up as often as not), or before the line of
    forward that went on without applying it ('unapplied'); a 'doubled' line as the context
    line it repeated. Empty where the kept text does not lead to it (a token that holds the
    newline also held more), or where the fault is not charged to the block's own line."""
    statement = taught_statement(fault.why)
    lines = answer.split("\n")
    if not 0 < fault.line <= len(lines):
        return []
    written = lines[fault.line - 1]
    if fault.kind == "doubled":
        return _line_tokens(tokenizer, kept, f" {written[1:]}\n")
    if statement is None:
        return []
    prefix = "+" if written.startswith("+") else ""  # a delta's added line
    code = written[len(prefix) :]
    if fault.kind == "applied":
        try:  # the fault may be charged to another line than the block's statement
            misapplied = bool(misapplied_blocks(parse_source(code.strip())))
        except (SyntaxError, ValueError):  # ValueError: a null byte
            misapplied = False
        if not misapplied:
            return []
    indent = code[: len(code) - len(code.lstrip())]
    return _line_tokens(tokenizer, kept, f"{prefix}{indent}{statement}\n")


def _line_tokens(tokenizer: Any, kept: list[int], line: str) -> list[int]:
    """The tokens that write `line` (its newline included) after the `kept` tokens, which
    end where it starts; empty where the kept text does not lead to it (a token that holds
    the newline also held more of the line than `line` has)."""
    kept_text = str(tokenizer.decode(kept))
    head = kept_text[kept_text.rfind("\n") + 1 :]
    if not line.startswith(head):
        return []
    return list(tokenizer(line[len(head) :], add_special_tokens=False).input_ids)


@functools.lru_cache(maxsize=4)
def _end_tokens(tokenizer: Any) -> torch.Tensor:
    """The tokens that could start an end tag (their text begins with `<`) and the end of
    sequence. Measured (bench/generation_bench.py redraw --mode delta, 2026-12-05): a
    near-copy taken back to its end tag's line wrote `</delta>` again at each of its 3
    draws (4 of 4 answers)."""
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    ends = [i for i, text in enumerate(texts) if text.startswith("<")]
    return torch.tensor([*ends, int(tokenizer.eos_token_id)], dtype=torch.long)


def _line_start(newlines: list[int], line: int) -> int:
    """How many tokens precede answer line `line` (1-based): the fewest whose text holds its
    `line - 1` newlines (the last of them may also hold the line's indentation)."""
    seen = 0
    for index, count in enumerate(newlines):
        seen += count
        if seen >= line - 1:
            return index + 1
    return len(newlines)
