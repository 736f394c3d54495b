"""The delta codec: extraction, tolerant application, errors that quote the parent."""

from __future__ import annotations

import pytest

from llmnas_dist.admission.delta import (
    apply_delta,
    apply_output,
    drop_unfinished,
    extract_code,
    extract_delta,
    feedback_for,
    make_delta,
    parse_hunks,
    patch,
)
from llmnas_dist.config import AdmissionConfig
from llmnas_dist.errors import CandidateRejected, ErrorClass
from llmnas_dist.program.static import check_static
from llmnas_dist.seeds import load_seeds

PARENT = load_seeds()["plain_cnn"]

DIFF = """--- baseline.py
+++ improved.py
@@ -99,7 +99,8 @@
             layers += [
                 nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
                 nn.BatchNorm2d(c_out),
-                nn.ReLU(inplace=True),
+                nn.GELU(),
+                nn.Dropout2d(0.05),
                 nn.MaxPool2d(2),
             ]
"""


def rejected(fn, *args) -> CandidateRejected:
    with pytest.raises(CandidateRejected) as info:
        fn(*args)
    return info.value


def test_apply_ignores_wrong_headers_and_result_is_valid():
    child = apply_delta(PARENT, DIFF)
    assert "nn.GELU()," in child and "nn.Dropout2d(0.05)," in child
    assert "nn.ReLU(inplace=True)" not in child
    assert child.count("\n") == PARENT.count("\n") + 1
    check_static(child, AdmissionConfig())


@pytest.mark.parametrize(
    "wrap",
    [
        lambda d: f"Here is my change.\n<delta>\n{d}</delta>\nDone.",
        lambda d: f"<delta>\n```diff\n{d}```\n</delta>",
        lambda d: f"Sure!\n```diff\n{d}```\nThis swaps the activation.",
        lambda d: f"```\n{d}```",
        lambda d: d,
    ],
    ids=["tags", "tags+fence", "fenced", "bare-fence", "raw"],
)
def test_extraction_forms_give_the_same_child(wrap):
    assert apply_output(PARENT, wrap(DIFF)) == apply_delta(PARENT, DIFF)


def test_whitespace_tolerant_context_and_indent_repair():
    # the model lost the leading indentation and spaced an argument list differently
    lossy = "\n".join(
        line[0] + line[1:].lstrip()
        if line[:1] in " +-" and not line.startswith(("---", "+++"))
        else line
        for line in DIFF.splitlines()
    ).replace("padding=1,", "padding = 1 ,")
    child = apply_delta(PARENT, lossy)
    assert child == apply_delta(PARENT, DIFF)  # added lines re-indented like their context


def test_blank_line_differences_are_tolerated():
    diff = """@@ -1 +1 @@
 def supported_hyperparameters():
-    return {"lr", "momentum", "dropout"}
+    return {"lr", "momentum"}

 class Net(nn.Module):
"""
    child = apply_delta(PARENT, diff)
    assert 'return {"lr", "momentum"}' in child
    assert "\n\n\nclass Net(nn.Module):" in child  # the parent's two blank lines are kept


def test_hunk_not_found_quotes_the_nearest_parent_lines():
    diff = DIFF.replace("nn.BatchNorm2d(c_out),", "nn.BatchNorm2d(c_out, eps=1e-3),", 1)
    err = rejected(apply_delta, PARENT, diff)
    assert err.error_class is ErrorClass.HUNK_NOT_FOUND
    assert "eps=1e-3" in err.message  # the offending hunk line
    assert "nn.BatchNorm2d(c_out)," in err.message  # the parent line nearest to it
    assert "|" in err.message  # quoted with line numbers


def test_hunk_ambiguous_names_every_place():
    parent = "def a():\n    return 1\n\ndef b():\n    return 1\n"
    err = rejected(apply_delta, parent, "@@ -1,1 +1,1 @@\n-    return 1\n+    return 2\n")
    assert err.error_class is ErrorClass.HUNK_AMBIGUOUS
    assert "lines 2, 5" in err.message


# DIFF with a context line the parent does not have (what the small model writes)
MADE_UP = DIFF.replace(
    "                nn.MaxPool2d(2),\n",
    "                nn.MaxPool2d(2),\n                nn.Identity(),\n",
)


def test_fuzz_ignores_made_up_context_and_says_so():
    assert rejected(apply_delta, PARENT, MADE_UP).error_class is ErrorClass.HUNK_NOT_FOUND
    patched = patch(PARENT, MADE_UP, fuzz=1)
    assert patched.code == apply_delta(PARENT, DIFF)  # the made-up line is not inserted
    assert patched.notes == ("hunk 1: ignored 1 context line(s) that match no parent line there",)
    assert patch(PARENT, DIFF, fuzz=1).notes == ()  # an exact hunk needs no note


def test_fuzz_has_a_limit_and_never_guesses_removed_lines():
    two_made_up = MADE_UP.replace("             layers += [\n", "             layers += [  # x\n")
    two_made_up = two_made_up.replace("layers += [  # x", "layers.extend([")
    assert patch(PARENT, two_made_up, fuzz=2).code == apply_delta(PARENT, DIFF)
    assert rejected(patch, PARENT, two_made_up, 1).error_class is ErrorClass.HUNK_NOT_FOUND
    wrong_removed = DIFF.replace(
        "-                nn.ReLU(inplace=True),", "-                nn.ReLU(),"
    )
    assert rejected(patch, PARENT, wrong_removed, 8).error_class is ErrorClass.HUNK_NOT_FOUND
    only_made_up = "@@ @@\n x = self.nowhere(x)\n+x = 1\n"  # at least one line must match
    assert rejected(patch, PARENT, only_made_up, 8).error_class is ErrorClass.HUNK_NOT_FOUND


def test_fuzz_places_an_ambiguous_hunk_first_after_the_previous_hunk():
    parent = "def a():\n    return 1\n\ndef b():\n    return 1\n"
    one = "@@ @@\n-    return 1\n+    return 2\n"
    assert apply_delta(parent, one, fuzz=1) == parent.replace("return 1", "return 2", 1)
    assert patch(parent, one, fuzz=1).notes == ("hunk 1: placed at line 2 of 2 matching places",)
    two = "@@ @@\n-def b():\n+def c():\n" + one
    assert apply_delta(parent, two, fuzz=1) == "def a():\n    return 1\n\ndef c():\n    return 2\n"


def test_fuzz_skips_a_hunk_that_changes_nothing_but_not_a_delta_that_does():
    noop = "@@ @@\n     def forward(self, x):\n"
    assert rejected(apply_delta, PARENT, DIFF + noop).error_class is ErrorClass.BAD_HUNK
    patched = patch(PARENT, DIFF + noop, fuzz=1)
    assert patched.code == apply_delta(PARENT, DIFF)
    assert patched.notes == ("hunk 2: context lines only, skipped",)
    assert rejected(patch, PARENT, noop + noop, 1).error_class is ErrorClass.BAD_HUNK


def test_fuzz_places_an_ambiguous_hunk_in_class_net_first():
    parent = load_seeds()["resnet_basic"]
    hunk = "@@ @@\n         super().__init__()\n+        self.scale = 2.0\n"
    assert rejected(apply_delta, parent, hunk).error_class is ErrorClass.HUNK_AMBIGUOUS
    patched = patch(parent, hunk, fuzz=1)
    lines = patched.code.splitlines()
    added = lines.index("        self.scale = 2.0")
    assert lines[added - 1].strip() == "super().__init__()"
    net = next(i for i, line in enumerate(lines) if line.startswith("class Net"))
    assert added > net  # not in the block class above Net, though that match comes first
    assert patched.notes[0].startswith(f"hunk 1: placed at line {added} of ")


def test_multiple_hunks_apply_in_order():
    diff = (
        "@@ -1,1 +1,1 @@\n"
        ' def supported_hyperparameters():\n-    return {"lr", "momentum", "dropout"}\n'
        '+    return {"lr"}\n'
        "@@ -50,3 +50,3 @@\n"
        "     def forward(self, x):\n-        x = self.pool(self.features(x))\n"
        "+        x = self.pool(self.features(x)) * 2\n"
    )
    child = apply_delta(PARENT, diff)
    assert 'return {"lr"}' in child and "self.features(x)) * 2" in child


@pytest.mark.parametrize(
    ("output", "error_class"),
    [
        ("I would add dropout.", ErrorClass.NO_DELTA),
        ("<delta>add dropout</delta>", ErrorClass.NO_DELTA),
        ("@@ -1 +1 @@\n context only\n", ErrorClass.BAD_HUNK),
        ("@@ -1 +1 @@\n+x = 1\n", ErrorClass.BAD_HUNK),  # nothing to locate it with
        (
            "@@ -1 +1 @@\n def supported_hyperparameters():\nstray prose\n+    pass\n",
            ErrorClass.BAD_HUNK,
        ),
    ],
)
def test_parse_errors(output, error_class):
    assert rejected(apply_output, PARENT, output).error_class is error_class


def test_trailing_prose_after_a_raw_diff_is_not_part_of_the_hunk():
    assert apply_output(PARENT, DIFF + "\nThis should train faster.\n") == apply_delta(PARENT, DIFF)


def test_recomputed_headers_and_make_delta_roundtrip():
    child = apply_delta(PARENT, DIFF)
    made = make_delta(PARENT, child)
    assert made.startswith("--- baseline.py\n+++ improved.py\n")
    (hunk,) = parse_hunks(made)
    assert hunk.header(1, 1).endswith(f"+1,{hunk.new_len} @@")
    assert hunk.new_len == hunk.old_len + 1
    assert apply_delta(PARENT, made) == child


def test_extract_code_forms():
    code = "import torch\nclass Net: pass\n"
    assert extract_code(f"<nn>\n{code}</nn>") == code
    assert extract_code(f"<nn>```python\n{code}```</nn>") == code
    two = f"```python\nx = 1\n```\ntext\n```python\n{code}```"
    assert extract_code(two) == code  # the block with class Net wins
    assert rejected(extract_code, "no code here").error_class is ErrorClass.NO_CODE
    assert extract_delta(f"<delta>{DIFF}") == DIFF  # an unclosed tag runs to the end


def test_feedback_names_class_message_and_advice_and_is_bounded():
    err = CandidateRejected(ErrorClass.HUNK_NOT_FOUND, "x" * 5000)
    text = feedback_for(err)
    assert "hunk_not_found" in text and "Copy the context" in text
    assert len(text) <= 1500
    short = feedback_for(CandidateRejected(ErrorClass.SHAPE_MISMATCH, "forward returned [2, 5]"))
    assert "forward returned [2, 5]" in short and "out_shape[0]" in short


def test_hunks_are_placed_in_the_parent_as_given():
    """An added line equal to a later hunk's anchor does not make that hunk ambiguous
    (hunks are located in the parent, not in what earlier hunks wrote), hunks may come in
    any order, and two hunks may not rewrite the same parent line."""
    parent = "a = 1\nb = 2\nc = 3\nd = 4\n"
    adds_d = "@@ @@\n a = 1\n+d = 4\n@@ @@\n-d = 4\n+d = 5\n"
    assert apply_delta(parent, adds_d) == "a = 1\nd = 4\nb = 2\nc = 3\nd = 5\n"
    swapped = "@@ @@\n-d = 4\n+d = 5\n@@ @@\n-a = 1\n+a = 0\n"
    assert apply_delta(parent, swapped) == "a = 0\nb = 2\nc = 3\nd = 5\n"
    overlap = "@@ @@\n-b = 2\n+b = 3\n@@ @@\n b = 2\n+x = 1\n"
    err = rejected(apply_delta, parent, overlap)
    assert err.error_class is ErrorClass.BAD_HUNK and "both change parent line 2" in err.message


def test_a_cut_off_delta_drops_its_unfinished_last_line_and_says_so():
    whole = "<delta>\n--- baseline.py\n+++ improved.py\n@@ @@\n a = 1\n+b = 2\n"
    cut, note = drop_unfinished(whole + " c = ")
    assert cut == whole and "cut off by max_new_tokens" in (note or "") and "' c = '" in note
    cut, note = drop_unfinished(whole)  # ends at a line end: nothing lost, but said
    assert cut == whole and "cut off" in (note or "") and "dropped" not in (note or "")
    assert drop_unfinished(whole + "</delta>")[1] is None  # finished
    assert drop_unfinished("<nn>\nx = 1")[1] is None  # not a delta
    assert apply_output("a = 1\n", cut) == "a = 1\nb = 2\n"


def test_a_cut_off_delta_keeps_its_finished_hunks():
    parent = "a = 1\nb = 2\nc = 3\nb = 2\n"
    finished = "<delta>\n--- baseline.py\n+++ improved.py\n@@ @@\n-a = 1\n+a = 0\n"
    # the last hunk was cut while its context (`b = 2`, twice in the parent) was ambiguous
    answer = finished + "@@ @@\n b = 2\n+x = 9"
    with pytest.raises(CandidateRejected):
        apply_output(parent, answer + "\n</delta>")
    cut, note = drop_unfinished(answer)
    assert cut == finished and "unfinished last hunk (2 lines after its header) was dropped" in (
        note or ""
    )
    assert apply_output(parent, cut) == "a = 0\nb = 2\nc = 3\nb = 2\n"
    ended = finished + "@@ @@\n b = 2\n+x = 9\n"  # cut at a line end: the hunk is still open
    assert drop_unfinished(ended)[0] == finished
