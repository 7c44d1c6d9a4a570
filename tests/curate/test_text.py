"""Text normalization and question ids (s1/curate/text.py)."""


from s1.curate.text import last_boxed, normalize, question_id, word_ngrams


def test_normalization_and_ids():
    assert normalize("  Find\tThe \n\n AREA ") == "find the area"
    assert question_id("Find the AREA.") == question_id("find  the\narea.")
    assert question_id("Find the area.") != question_id("Find the volume.")
    assert word_ngrams("a b c", 8) == {"a b c"}
    assert len(word_ngrams(" ".join(map(str, range(10))), 8)) == 3
    assert last_boxed(r"so \boxed{\frac{1}{2}} and \boxed{x^{2}}") == "x^{2}"
