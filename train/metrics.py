"""Caption metrics with pycocoevalcap: BLEU-1..4, METEOR, ROUGE-L, CIDEr-D.

Captions are tokenised by scenecap's own tokenizer (any script) instead of the PTB tokenizer, which is
English-only and needs Java. METEOR needs Java; without it METEOR is skipped with a one-line note.
"""

from __future__ import annotations

import logging
import shutil

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
                log.info("METEOR skipped: %s", str(e).splitlines()[0] if str(e) else type(e).__name__)
    return scores
