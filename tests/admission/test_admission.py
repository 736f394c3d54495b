"""The admission pipeline end to end, with the real sandboxed build."""

from __future__ import annotations

import pytest

from llmnas_dist.admission.novelty import NoveltyIndex, minhash
from llmnas_dist.admission.pipeline import Admission
from llmnas_dist.config import AdmissionConfig
from llmnas_dist.errors import ErrorClass
from llmnas_dist.evaluation.datasets import dataset_spec
from llmnas_dist.program.static import canonicalize
from llmnas_dist.seeds import load_seeds

CFG = AdmissionConfig(build_timeout_s=120)
DIGITS = dataset_spec("digits")
SEED = load_seeds()["plain_cnn"]


def test_seed_admitted_then_duplicate_then_near_copy_not_novel():
    admission = Admission(CFG, DIGITS)
    first = admission.admit_program(SEED)
    assert first.admitted, first.message
    assert first.error_class is None and first.param_count and first.param_count > 0
    assert len(first.code_hash or "") == 64 and len(first.signature or b"") == 4 * CFG.num_perm
    assert (first.nearest_hash, first.nearest_jaccard) == (None, None)
    assert first.code_hash in admission.index

    reformatted = "# my copy\n" + SEED.replace("bias=False", "bias = False")
    dup = admission.admit_program(reformatted)
    assert dup.error_class is ErrorClass.DUPLICATE and dup.param_count is None  # never built
    assert (dup.code_hash, dup.nearest_hash, dup.nearest_jaccard) == (
        first.code_hash,
        first.code_hash,
        1.0,
    )

    delta = (
        "<delta>\n--- baseline.py\n+++ improved.py\n@@ -1,3 +1,3 @@\n"
        "         self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(c_in, out_shape[0]))\n"
        "+        self.scale = 1.0\n</delta>"
    )
    near = admission.admit(delta, "delta", SEED)
    assert near.error_class is ErrorClass.NOT_NOVEL, near.message
    assert near.param_count == first.param_count  # it was built before the novelty verdict
    assert near.nearest_hash == first.code_hash and near.nearest_jaccard >= CFG.tau
    assert "self.scale = 1.0" in (near.canonical or "")
    assert len(admission.index) == 1  # rejected programs are not indexed


def test_build_failure_still_records_hash_and_nearest():
    index = NoveltyIndex.from_config(CFG)
    admission = Admission(CFG, DIGITS, index)
    wrong = SEED.replace("nn.Linear(c_in, out_shape[0])", "nn.Linear(c_in, out_shape[0] + 1)")
    index.add("seed", _signature_of(SEED))
    verdict = admission.admit_program(wrong)
    assert verdict.error_class is ErrorClass.SHAPE_MISMATCH
    assert verdict.code_hash and verdict.nearest_hash == "seed" and verdict.nearest_jaccard > 0.8
    assert "seed" in index and len(index) == 1


def _no_build(*_args):
    raise AssertionError("the build must not be reached")


def _signature_of(code: str):
    return minhash(canonicalize(code, CFG)[0])


@pytest.mark.parametrize(
    ("output", "mode", "error_class"),
    [
        ("no code at all", "full", ErrorClass.NO_CODE),
        ("<nn>import subprocess\n" + SEED + "</nn>", "full", ErrorClass.FORBIDDEN_IMPORT),
        ("```python\nclass Net(:\n```", "full", ErrorClass.SYNTAX_ERROR),
        ("just words", "delta", ErrorClass.NO_DELTA),
        ("@@ -1 +1 @@\n-import nothing\n+import math\n", "delta", ErrorClass.HUNK_NOT_FOUND),
    ],
)
def test_rejections_before_the_build_never_run_it(output, mode, error_class):
    admission = Admission(CFG, DIGITS, build=_no_build)
    verdict = admission.admit(output, mode, SEED if mode == "delta" else None)
    assert not verdict.admitted and verdict.error_class is error_class
    assert verdict.param_count is None and verdict.message
    assert verdict.to_dict()["error_class"] == error_class.value


def test_bad_mode_and_missing_parent_are_caller_errors():
    admission = Admission(CFG, DIGITS, build=_no_build)
    with pytest.raises(ValueError, match="parent"):
        admission.admit("@@", "delta")
    with pytest.raises(ValueError, match="mode"):
        admission.admit("x", "diff")  # type: ignore[arg-type]


FUZZY_DELTA = """<delta>
@@ @@
                 nn.BatchNorm2d(c_out),
-                nn.ReLU(inplace=True),
+                nn.GELU(),
                 nn.MaxPool2d(2),
                 nn.Identity(),
</delta>"""  # the last context line is made up


def test_fuzz_is_a_config_choice_and_its_placement_is_the_admitted_message():
    strict = Admission(CFG, DIGITS).admit(FUZZY_DELTA, "delta", SEED)
    assert strict.error_class is ErrorClass.HUNK_NOT_FOUND
    fuzzy = Admission(CFG.model_copy(update={"delta_fuzz": 1}), DIGITS)
    verdict = fuzzy.admit(FUZZY_DELTA, "delta", SEED)
    assert verdict.admitted, verdict.message
    assert "nn.GELU()" in (verdict.code or "") and "nn.Identity()" not in (verdict.code or "")
    assert verdict.message == "hunk 1: ignored 1 context line(s) that match no parent line there"


def test_generation_notes_and_a_dropped_cut_off_line_lead_the_message():
    """How an answer was generated (a grammar that fell back) and the dropping of a cut-off
    delta's unfinished line are in the verdict's message, admitted or rejected."""
    admission = Admission(CFG, DIGITS, build=_no_build)
    cut = FUZZY_DELTA.replace("</delta>", "").rstrip("\n") + "\n                nn.Dro"
    verdict = admission.admit(cut, "delta", SEED, note="unconstrained: the parent has 900 lines")
    assert verdict.error_class is ErrorClass.HUNK_NOT_FOUND
    assert verdict.message.startswith("unconstrained: the parent has 900 lines; answer cut off")
    assert "'                nn.Dro' was dropped" in verdict.message


GOOD_HUNK = """@@ @@
                 nn.BatchNorm2d(c_out),
-                nn.ReLU(inplace=True),
+                nn.GELU(),
                 nn.MaxPool2d(2),
"""
BAD_HUNK = """@@ @@
         self.features = nn.Sequential(*layers)
-        self.pool = nn.AdaptiveAvgPool2d(1)
+        self.pool = nn.Sequential(nn.Conv2d(1, 64, 5, padding='same'), nn.AdaptiveAvgPool2d(1))
         self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(c_in, out_shape[0]))
"""
CHANNEL_MEAN = """@@ @@
     def forward(self, x):
-        x = self.pool(self.features(x))
+        x = self.pool(self.features(x)).mean(1)
"""


def _delta(*hunks: str) -> str:
    return "<delta>\n--- baseline.py\n+++ improved.py\n" + "".join(hunks) + "</delta>"


@pytest.mark.parametrize("order", [(GOOD_HUNK, BAD_HUNK), (BAD_HUNK, GOOD_HUNK)])
def test_a_delta_whose_one_hunk_breaks_its_build_is_admitted_without_that_hunk(order):
    """The hunk the default run's deltas broke their build with (a layer made for the input's
    channels where the features' channels arrive), first or last: with drop_faulty_hunks the
    rest is admitted, and the message says which hunk was left out and why."""
    answer = _delta(*order)
    whole = Admission(CFG, DIGITS).admit(answer, "delta", SEED)
    assert whole.error_class is ErrorClass.BUILD_FAILED, whole.message
    dropping = Admission(CFG.model_copy(update={"drop_faulty_hunks": True}), DIGITS)
    verdict = dropping.admit(answer, "delta", SEED)
    assert verdict.admitted, verdict.message
    code = verdict.code or ""
    assert "nn.GELU()" in code and "nn.Conv2d(1, 64" not in code
    bad = order.index(BAD_HUNK) + 1
    assert verdict.message.startswith(f"hunk {bad} of 2 left out (whole: build_failed: ")
    assert verdict.code_hash in dropping.index


def test_hunks_are_left_out_only_for_faults_one_hunk_can_cause_and_never_all_of_them():
    dropping = Admission(CFG.model_copy(update={"drop_faulty_hunks": True}), DIGITS)
    alone = dropping.admit(_delta(BAD_HUNK), "delta", SEED)  # nothing would be left
    assert alone.error_class is ErrorClass.BUILD_FAILED
    both_bad = dropping.admit(_delta(BAD_HUNK, CHANNEL_MEAN), "delta", SEED)
    assert not both_bad.admitted  # each hunk alone still fails: the whole verdict stands
    assert both_bad.error_class is ErrorClass.BUILD_FAILED and "left out" not in both_bad.message
    assert dropping.admit(_delta(GOOD_HUNK), "delta", SEED).admitted
    again = dropping.admit(_delta(GOOD_HUNK, BAD_HUNK), "delta", SEED)
    assert again.error_class is ErrorClass.BUILD_FAILED  # without its bad hunk: a duplicate


def test_without_hunk_leaves_out_one_hunk_by_its_written_place():
    from llmnas_dist.admission.delta import extract_delta, without_hunk

    diff = extract_delta(_delta(GOOD_HUNK, BAD_HUNK, CHANNEL_MEAN))
    middle = without_hunk(diff, 2) or ""
    assert "GELU" in middle and "nn.Conv2d(1, 64" not in middle
    assert ".mean(1)" in middle and middle.count("@@ @@") == 2
    assert without_hunk(diff, 0) is None and without_hunk(diff, 4) is None
    assert without_hunk(extract_delta(_delta(GOOD_HUNK)), 1) is None
