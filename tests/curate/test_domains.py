"""Domain classification (s1/curate/domains.py): the keyword classifier, pool labels, MSC codes."""
import json
from pathlib import Path

from s1.curate import domains

FIX = Path(__file__).parents[1] / "fixtures" / "curate"


def test_keyword_classifier(shared_data):
    msc = domains.load_msc(shared_data / "curation" / "msc.json")
    assert len(msc) == 61
    clf = domains.KeywordClassifier(msc)
    assert clf.predict("A fair coin is flipped 10 times; what is the probability of exactly 4 heads?") == "60"
    assert clf.predict("In triangle ABC, the angle bisector from A meets the circumcircle at D. Find AD.") == "51"
    assert clf.predict("Find the remainder when 7^100 is divided by 13, a prime.") == "11"
    assert clf.predict("How many ways can 5 people be arranged in a row?") == "05"
    assert clf.predict("Compute the determinant of the matrix.") == "15"
    assert clf.predict("zzz qqq") == domains.DEFAULT_CODE
    q = "Let P be a polynomial with integer coefficients and roots 1 and 2."
    assert clf.predict(q) == clf.predict(q)


def test_pool_label_mapping_and_agreement():
    r_math = {"source_type": "math_train", "metadata": {"type": "Counting & Probability"}, "domain": "60"}
    r_ob = {"source_type": "olympiadbench", "metadata": {"subfield": "Number Theory"}, "domain": "05"}
    r_omni = {"source_type": "omni_math_rule", "metadata": {"domain": ["Mathematics -> Geometry -> Plane Geometry -> Angles"]}, "domain": "51"}
    r_none = {"source_type": "aime_1983_2024", "metadata": {}, "domain": "11"}
    assert domains.pool_label(r_math) == ("Counting & Probability", ("05", "60"))
    assert domains.pool_label(r_omni)[1][0] == "51"
    assert domains.pool_label(r_none) is None
    a = domains.agreement([r_math, r_ob, r_omni, r_none])["total"]
    assert a == {"labeled": 3, "strict": 1, "lenient": 2, "strict_rate": round(1 / 3, 4), "lenient_rate": round(2 / 3, 4)}
    # every code in the mapping tables is a real MSC code
    codes = {m["code"] for m in json.loads((FIX.parents[2].parent / "shared" / "data" / "curation" / "msc.json").read_text())} \
        if (FIX.parents[2].parent / "shared" / "data").exists() else None
    if codes:
        for table in (domains.MATH_TYPE, domains.OLYMPIADBENCH_SUBFIELD, domains.OMNI_DOMAIN):
            assert all(c in codes for v in table.values() for c in v)


def test_parse_code():
    assert domains.parse_code(" 11\n", {"11", "05"}) == "11"
    assert domains.parse_code("MSC 2020: 05", {"11", "05"}) == "05"
    assert domains.parse_code("no idea", {"11"}) is None
