"""Domains stage (s1 §2.1 diversity): one of the 61 top-level MSC domains per question.

With a model: our engine answers a classification prompt (the msc.json domain prompts) with a
two-digit code; unparseable answers fall back to the classifier below and are counted.
Without a model: a deterministic TF-IDF classifier. Each domain's document is its msc.json title
and descriptions plus a short list of competition-math keywords (KEYWORDS, hand-written because the
MSC descriptions name research areas, not the words contest problems use); a question goes to the
domain with the highest cosine similarity, ties to the lower code, no match at all to DEFAULT_CODE.

Agreement with the labels the pool already carries (POOL_LABEL_TO_MSC below) is reported: strict
(= the label's primary code) and lenient (any of the codes listed for the label).
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

from s1.curate.store import run_cached, sampling_params

DEFAULT_CODE = "97"   # no keyword at all: elementary word problems are MSC 97 (mathematics education)

KEYWORDS = {
    "03": "logic statement statements true false truth knight knights knave knaves liar lies proposition",
    "05": "combinatorics ways arrange arrangements arranged choose chosen permutation permutations combination "
          "combinations binomial binom counting count subsets subset committee pigeonhole graph vertices vertex edges "
          "edge colored coloring colors color tournament grid board chessboard paths path tiles tiling distinguishable "
          "indistinguishable select selected orderings",
    "11": "prime primes divisible divisibility divisor divisors remainder modulo mod gcd lcm digit digits "
          "factorial congruent congruence relatively coprime factorization integer",
    "12": "polynomial polynomials root roots coefficient coefficients quadratic cubic quartic equation equations "
          "solve solutions zeros degree monic factor expand simplify expression variable system",
    "15": "matrix matrices vector vectors determinant linear eigenvalue eigenvalues pmatrix bmatrix det projection "
          "rotation reflection span",
    "20": "group groups subgroup subgroups homomorphism isomorphism cyclic abelian symmetric",
    "26": "function function inequality inequalities maximum minimum real increasing decreasing log logarithm "
          "logarithms exponential sin cos tan trigonometric absolute value domain range graph inverse",
    "28": "integral integrals integrate dx area under",
    "30": "complex imaginary conjugate modulus argument unit",
    "39": "functional equation satisfies recurrence recursively",
    "40": "sequence sequences series sum sums infinite converges convergent limit arithmetic geometric progression "
          "terms term nth",
    "49": "maximize minimize optimal optimization largest smallest",
    "51": "triangle triangles circle circles angle angles radius area perimeter polygon hexagon pentagon octagon "
          "rectangle rectangular points point line lines segment segments tangent inscribed circumscribed diameter "
          "chord midpoint perpendicular parallel isosceles equilateral trapezoid quadrilateral sphere cube cone "
          "cylinder volume coordinate coordinates parabola ellipse hyperbola plane distance side sides length "
          "altitude median bisector circumcircle incircle centroid orthocenter degrees measure",
    "52": "convex polyhedron polytope lattice packing",
    "60": "probability random randomly expected expectation dice die coin coins chance independent flip flipped "
          "rolled roll",
    "62": "mean median mode average data statistics standard deviation survey percent",
    "68": "algorithm algorithms program computer binary strings string bits",
    "70": "velocity acceleration mass force particle projectile speed moving",
    "91": "game games player players win wins winning strategy turn turns move moves",
    "97": "dollars dollar cents cost costs price store buy buys bought sells sold students class school miles "
          "hours minutes speed pages people money total ratio",
}

_WORD = re.compile(r"[a-z]+")
_STOP = set("the and for with are that this what how many much which find let its let each from than then "
            "there their such other into given show prove also all any one two three four five six has have "
            "can not its who will when where does being been was were use used value values time pair pairs "
            "lie triple triples set sets problem problems number numbers type table including matter "
            "propertie system relation general theory special".split())


def _tokens(text: str) -> list[str]:
    out = []
    for w in _WORD.findall(text.lower()):
        if len(w) < 3 or w in _STOP:
            continue
        if len(w) > 4 and w.endswith("s") and not w.endswith("ss"):
            w = w[:-1]            # crude plural folding: "triangles" -> "triangle"
        out.append(w)
    return out


def load_msc(path) -> list[dict]:
    rows = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(rows, list) or not all({"code", "title", "descriptions"} <= set(r) for r in rows):
        raise ValueError(f"{path}: expected a list of {{code, title, descriptions, prompt}} objects")
    return rows


class KeywordClassifier:
    """TF-IDF over the 61 domain documents; cosine similarity; deterministic."""

    def __init__(self, msc: list[dict], keywords: dict[str, str] = KEYWORDS):
        self.codes = [m["code"] for m in msc]
        self.titles = {m["code"]: m["title"] for m in msc}
        docs = []
        for m in msc:
            text = " ".join([m["title"], *m["descriptions"]])
            # keywords count 2x: they are the words contest problems actually use
            docs.append(Counter(_tokens(text)) + Counter({t: 2 for t in _tokens(keywords.get(m["code"], ""))}))
        df = Counter(t for d in docs for t in d)
        n = len(docs)
        self.idf = {t: math.log(n / c) + 1.0 for t, c in df.items()}
        self.weights: dict[str, list[tuple[int, float]]] = {}   # token -> [(domain index, weight)]
        for j, d in enumerate(docs):
            vec = {t: (1 + math.log(c)) * self.idf[t] for t, c in d.items()}
            norm = math.sqrt(sum(v * v for v in vec.values()))
            for t, v in vec.items():
                self.weights.setdefault(t, []).append((j, v / norm))
        self.default = DEFAULT_CODE if DEFAULT_CODE in self.codes else self.codes[0]

    def scores(self, question: str) -> list[float]:
        s = [0.0] * len(self.codes)
        for t, c in Counter(_tokens(question)).items():
            if t in self.weights:
                q = (1 + math.log(c)) * self.idf[t]
                for j, w in self.weights[t]:
                    s[j] += q * w
        return s

    def predict(self, question: str) -> str:
        s = self.scores(question)
        best = max(range(len(s)), key=lambda j: (s[j], -j))   # ties -> first (lowest) code
        return self.codes[best] if s[best] > 0 else self.default


# ----------------------------------------------------------------------- pool labels -> MSC codes
# label -> (primary code, acceptable alternatives...). Written by hand from the MSC titles.
MATH_TYPE = {  # MATH `type` (math_train, math_test)
    "Algebra": ("12", "26", "97"), "Intermediate Algebra": ("12", "26", "40", "39"),
    "Prealgebra": ("97", "11", "12"), "Number Theory": ("11",), "Geometry": ("51", "52"),
    "Counting & Probability": ("05", "60"), "Precalculus": ("26", "15", "30", "51"),
}
OLYMPIADBENCH_SUBFIELD = {
    "Algebra": ("12", "26", "39", "40"), "Combinatorics": ("05", "60", "91"),
    "Geometry": ("51", "52"), "Number Theory": ("11",),
}
OMNI_DOMAIN = {  # Omni-MATH "Mathematics -> A -> B": matched on "A -> B", then on "A"
    "Geometry -> Plane Geometry": ("51", "52"), "Geometry -> Solid Geometry": ("51", "52"),
    "Geometry -> Differential Geometry": ("53", "51"), "Geometry": ("51", "52"),
    "Discrete Mathematics -> Combinatorics": ("05", "60"), "Discrete Mathematics -> Graph Theory": ("05",),
    "Discrete Mathematics -> Algorithms": ("68", "05"), "Discrete Mathematics -> Logic": ("03",),
    "Discrete Mathematics -> Set Theory": ("03", "05"), "Discrete Mathematics -> Game Theory": ("91", "05"),
    "Discrete Mathematics": ("05",),
    "Applied Mathematics -> Statistics": ("62", "60"), "Applied Mathematics -> Probability": ("60", "05"),
    "Applied Mathematics -> Math Word Problems": ("97",), "Applied Mathematics": ("97", "90"),
    "Algebra -> Prealgebra": ("97", "11", "12"), "Algebra -> Linear Algebra": ("15",),
    "Algebra -> Abstract Algebra": ("20", "08", "16", "12"), "Algebra -> Intermediate Algebra": ("12", "26", "39", "40"),
    "Algebra -> Algebra": ("12", "26", "39"), "Algebra -> Sequences and Series": ("40",), "Algebra": ("12", "26"),
    "Number Theory": ("11",),
    "Calculus -> Integral Calculus": ("26", "28", "44"), "Calculus -> Differential Calculus": ("26", "49"),
    "Calculus": ("26", "40"),
    "Precalculus -> Trigonometric Functions": ("26", "33", "51"), "Precalculus -> Functions": ("26", "39"),
    "Precalculus -> Limits": ("40", "26"), "Precalculus": ("26",),
}


def pool_label(rec: dict) -> tuple[str, tuple[str, ...]] | None:
    """(label text, MSC codes) from the record's own metadata, or None if it carries no label."""
    meta = rec.get("metadata") or {}
    src = rec.get("source_type", "")
    if src in ("math_train", "math_test") and meta.get("type") in MATH_TYPE:
        return meta["type"], MATH_TYPE[meta["type"]]
    if src == "olympiadbench" and meta.get("subfield") in OLYMPIADBENCH_SUBFIELD:
        return meta["subfield"], OLYMPIADBENCH_SUBFIELD[meta["subfield"]]
    if src == "omni_math_rule" and meta.get("domain"):
        parts = [p.strip() for p in meta["domain"][0].split("->")]
        if parts and parts[0] == "Mathematics":
            parts = parts[1:]
        for key in (" -> ".join(parts[:2]), parts[0] if parts else ""):
            if key in OMNI_DOMAIN:
                return key, OMNI_DOMAIN[key]
    return None


def agreement(records: list[dict]) -> dict:
    """Agreement of rec['domain'] with the mapped pool labels, overall and per source."""
    per: dict[str, dict] = {}
    for r in records:
        lab = pool_label(r)
        if lab is None:
            continue
        c = per.setdefault(r["source_type"], {"labeled": 0, "strict": 0, "lenient": 0})
        c["labeled"] += 1
        c["strict"] += r["domain"] == lab[1][0]
        c["lenient"] += r["domain"] in lab[1]
    tot = {k: sum(c[k] for c in per.values()) for k in ("labeled", "strict", "lenient")}
    for c in [*per.values(), tot]:
        c["strict_rate"] = round(c["strict"] / c["labeled"], 4) if c["labeled"] else None
        c["lenient_rate"] = round(c["lenient"] / c["labeled"], 4) if c["labeled"] else None
    return {"per_source": per, "total": tot}


# ------------------------------------------------------------------------------- model classifier
def classification_prompt(msc: list[dict], question: str) -> str:
    """A raw ChatML prompt (no thinking phase) asking for the two-digit MSC code."""
    listing = "\n".join(m["prompt"] if m.get("prompt") else f"### {m['title']}\n* Code: {m['code']}" for m in msc)
    system = ("You classify math questions into Mathematics Subject Classification (MSC) top-level domains. "
              "Answer with the two-digit code of the single best domain and nothing else.")
    user = f"Domains:\n{listing}\n\nQuestion:\n{question}\n\nMSC code:"
    return (f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n{user}<|im_end|>\n"
            f"<|im_start|>assistant\n")


def parse_code(text: str, codes: set[str]) -> str | None:
    for m in re.finditer(r"(?<!\d)(\d{2})(?!\d)", text or ""):
        if m.group(1) in codes:
            return m.group(1)
    return None


def classify(records: list[dict], msc: list[dict], llm=None, cache_path=None, batch_size: int = 64,
             max_tokens: int = 8, progress: bool = True) -> tuple[list[dict], dict]:
    """Add `domain` (MSC code) and `domain_method` ("model" | "keyword" | "keyword_fallback")."""
    from tqdm import tqdm

    clf = KeywordClassifier(msc)
    codes = set(clf.codes)
    model_codes: dict[str, dict] = {}
    if llm is not None:
        qs = {r["id"]: r["question"] for r in records}

        def compute(ids):
            outs = llm.generate([classification_prompt(msc, qs[i]) for i in ids],
                                sampling_params(temperature=0.0, max_tokens=max_tokens), raw=True, use_tqdm=False)
            return [{"id": i, "text": (o.text if o.text is not None else o.answer) or "",
                     "code": parse_code((o.text if o.text is not None else o.answer) or "", codes)}
                    for i, o in zip(ids, outs)]
        model_codes = run_cached([r["id"] for r in records], cache_path, compute, batch_size,
                                 desc="domains (model)", progress=progress)
    out = []
    methods = Counter()
    for r in tqdm(records, desc="domains", unit="q", disable=not progress):
        r = dict(r)
        code = model_codes.get(r["id"], {}).get("code") if llm is not None else None
        if code is not None:
            method = "model"
        else:
            code, method = clf.predict(r["question"]), ("keyword_fallback" if llm is not None else "keyword")
        r["domain"], r["domain_method"] = code, method
        methods[method] += 1
        out.append(r)
    hist = Counter(r["domain"] for r in out)
    stats = {"methods": dict(methods), "domains_used": len(hist),
             "histogram": {c: hist[c] for c in sorted(hist)}, "titles": {c: clf.titles[c] for c in hist},
             "agreement_with_pool_labels": agreement(out)}
    if llm is not None:   # the keyword classifier's own agreement, for comparison
        kw = [dict(r, domain=clf.predict(r["question"])) for r in records]
        stats["keyword_agreement_with_pool_labels"] = agreement(kw)["total"]
    return out, stats
