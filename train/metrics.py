"""Caption metrics with pycocoevalcap: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D.

Captions are tokenised by scenecap's own tokenizer (any script) instead of the PTB tokenizer, which is
English-only and needs Java. METEOR needs Java; without it METEOR is skipped with a one-line note.
"""

from __future__ import annotations

import logging
import shutil

from scenecap.edge.errors import first_line
from scenecap.train.text import TextOptions, tokenize

log = logging.getLogger("scenecap.metrics")


def _prep(text: str, opts: TextOptions) -> str:
    return " ".join(tokenize(text, opts)) or "<empty>"


def caption_metrics(references: dict, hypotheses: dict, meteor: bool = True,
                    opts: TextOptions | None = None) -> dict[str, float]:
    """references: id -> list of captions; hypotheses: id -> caption. Only ids in both are scored."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    opts = opts or TextOptions()
    ids = [i for i in hypotheses if i in references]
    if not ids:
        return {}
    gts = {i: [_prep(c, opts) for c in references[i]] for i in ids}
    res = {i: [_prep(hypotheses[i], opts)] for i in ids}
    scores: dict[str, float] = {}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    for n, b in enumerate(bleu, start=1):
        scores[f"BLEU-{n}"] = float(b)
    scores["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    scores["CIDEr-D"] = float(Cider().compute_score(gts, res)[0])
    if meteor:
        if shutil.which("java") is None:
            log.info("METEOR skipped: it needs Java, which is not installed")
        else:
            from pycocoevalcap.meteor.meteor import Meteor

            try:
                scores["METEOR"] = float(Meteor().compute_score(gts, res)[0])
            except Exception as e:  # the Java subprocess can fail in many ways; the other metrics still count
                log.info("METEOR skipped: %s", first_line(e))
    return scores


def distinct_captions(hypotheses: dict) -> int:
    """How many different captions a model gave: a model that ignores the image gives one or a few."""
    return len({" ".join(str(h).split()) for h in hypotheses.values()})


def constant_baseline(references: dict, opts: TextOptions | None = None, candidates: int = 12) -> dict:
    """The best constant caption: the same caption for every image, chosen among the most frequent references
    (and references of typical length) by BLEU-4. A model that does not beat it has not learnt from the image."""
    from collections import Counter

    counts = Counter(c for caps in references.values() for c in caps)
    if not counts:
        return {}
    frequent = [c for c, _ in counts.most_common(candidates // 2)]
    by_length = sorted(counts, key=lambda c: (len(c.split()), c))
    step = max(1, len(by_length) // (candidates // 2 + 1))
    typical = by_length[step::step][: candidates // 2]
    best: dict = {}
    for caption in dict.fromkeys(frequent + typical):
        scores = caption_metrics(references, {i: caption for i in references}, meteor=False, opts=opts)
        if not best or scores["BLEU-4"] > best["BLEU-4"]:
            best = {"caption": caption, "BLEU-4": scores["BLEU-4"], "CIDEr-D": scores["CIDEr-D"]}
    return best


def trivial_reasons(scores: dict, distinct: int, images: int, baseline: dict) -> list[str]:
    """Why a model looks like it ignores the image (empty when it beats every trivial baseline)."""
    reasons = []
    if baseline and (scores.get("BLEU-4") or 0.0) <= baseline["BLEU-4"]:
        reasons.append(f"BLEU-4 {scores.get('BLEU-4') or 0:.3f} does not beat the constant caption's "
                       f"{baseline['BLEU-4']:.3f}")
    if baseline and (scores.get("CIDEr-D") or 0.0) <= baseline["CIDEr-D"]:
        reasons.append(f"CIDEr-D {scores.get('CIDEr-D') or 0:.3f} does not beat the constant caption's "
                       f"{baseline['CIDEr-D']:.3f}")
    if images > 1 and distinct <= max(1, images // 10):
        reasons.append(f"it gives only {distinct} different caption{'s' if distinct != 1 else ''} "
                       f"for {images} images")
    return reasons
