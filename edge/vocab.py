"""The vocabulary: token strings by id, and the special tokens. Shared by train (encode) and edge (decode)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from scenecap.edge.errors import ScenecapError
from scenecap.edge.terminal import escape, is_safe

VOCAB_FORMAT = "scenecap-vocab"
# The order of the system scenecap replaces (pad 0, <unk> 1, <start> 2, <end> 3), so imported models keep their ids.
DEFAULT_SPECIALS = {"pad": "<pad>", "unk": "<unk>", "start": "<start>", "end": "<end>"}
# A vocab.json outside a bundle (run folders, exports): the original system's 26,556 words take 0.4 MB; 64 MB is a
# few million words, more than any captioner's output layer, and stops a runaway file before it is parsed.
MAX_VOCAB_BYTES = 64 << 20


@dataclass
class Vocab:
    tokens: list[str]
    specials: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_SPECIALS))

    def __post_init__(self) -> None:
        self.index = {}
        for i, tok in enumerate(self.tokens):
            if not isinstance(tok, str) or not tok:
                raise ScenecapError(f"vocabulary entry {i} is {tok!r}; expected a non-empty string")
            if tok in self.index:
                raise ScenecapError(f"vocabulary token {tok!r} appears twice (ids {self.index[tok]} and {i})")
            self.index[tok] = i
        for role in ("pad", "unk", "start", "end"):
            if role not in self.specials:
                raise ScenecapError(f"vocabulary specials have no {role!r} entry; expected pad, unk, start and end")
        # Every role, not only the four: `ids` looks them all up, and a name missing there was a KeyError.
        for role, name in self.specials.items():
            if name not in self.index:
                raise ScenecapError(f"vocabulary has no {role} token {name!r}; expected it among the tokens")

    @property
    def ids(self) -> dict[str, int]:
        """Special token ids by role: pad, unk, start, end."""
        return {role: self.index[name] for role, name in self.specials.items()}

    @property
    def pad(self) -> int:
        return self.index[self.specials["pad"]]

    @property
    def unk(self) -> int:
        return self.index[self.specials["unk"]]

    @property
    def start(self) -> int:
        return self.index[self.specials["start"]]

    @property
    def end(self) -> int:
        return self.index[self.specials["end"]]

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, words: list[str]) -> list[int]:
        """Word list -> ids wrapped in <start> ... <end>; unknown words become <unk>."""
        return [self.start] + [self.index.get(w, self.unk) for w in words] + [self.end]

    def decode(self, ids) -> list[str]:
        """Ids -> words, stopping at <end> and skipping the other special tokens."""
        # The ids looked up once, not per word: each lookup reads the 26,556-entry index, cold after a caption.
        end, skip, tokens = self.end, {self.pad, self.start, self.unk}, self.tokens
        words = []
        for i in map(int, ids):
            if i == end:
                break
            if i not in skip and 0 <= i < len(tokens):
                words.append(tokens[i])
        return words

    def to_json(self) -> dict:
        return {"format": VOCAB_FORMAT, "version": 1, "specials": self.specials, "tokens": self.tokens}

    def save(self, path: str | Path) -> None:
        from scenecap.edge.fileio import atomic_write_text

        atomic_write_text(path, json.dumps(self.to_json(), ensure_ascii=False, indent=0))

    @classmethod
    def load(cls, path: str | Path, max_bytes: int = MAX_VOCAB_BYTES) -> Vocab:
        """Read a vocab.json (a run folder's, an export's): refused in one line if it is not a regular file, larger
        than `max_bytes` or not a valid vocabulary."""
        from scenecap.edge.fileio import read_regular

        path = Path(path)
        # Links followed here: run folders and exports may link their files; bundles refuse links (edge/bundle.py).
        return cls.parse(read_regular(path, max_bytes, "vocabulary file", follow_symlinks=True), path)

    @classmethod
    def parse(cls, raw: bytes, path: str | Path) -> Vocab:
        """A vocabulary from the bytes of a vocab.json (already read, and verified when from a bundle); `path` names
        the file in messages."""
        from scenecap.edge.fileio import parse_json

        data = parse_json(raw, path, "vocabulary object")
        if not isinstance(data, dict) or data.get("format") != VOCAB_FORMAT or not isinstance(
            data.get("tokens"), list
        ):
            raise ScenecapError(f"{path}: expected a JSON object with format {VOCAB_FORMAT!r} and a tokens list")
        specials = data.get("specials", DEFAULT_SPECIALS)
        if not isinstance(specials, dict) or not all(isinstance(v, str) for v in specials.values()):
            raise ScenecapError(f"{path}: 'specials' must map pad/unk/start/end to token strings")
        try:
            vocab = cls(list(data["tokens"]), dict(specials))
        except ScenecapError as e:
            raise ScenecapError(f"{path}: {e}") from None
        _check_printable(vocab.tokens, path)
        return vocab


def _check_printable(tokens: list[str], path: str | Path) -> None:
    """A token is printed as a caption word: one with a newline, an escape sequence or a bidi override would forge
    stdout records or rewrite the terminal, so a file holding one is refused (a trainer never makes one)."""
    for i, tok in enumerate(tokens):
        if not is_safe(tok):
            raise ScenecapError(f"{path}: vocabulary entry {i} is {escape(repr(tok))}; expected no control "
                                "characters, bidi overrides or line separators (tokens are printed as words)")
