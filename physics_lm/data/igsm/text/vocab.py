"""Word-level vocabulary of the iGSM language, with an exact text round trip.

Tokenisation rule (the same for problems, solutions, answers, retry sentences and single names):

1. Split the text on single spaces into *pieces*. An empty piece (leading, trailing or double space)
   is an error: such text could not be restored exactly.
2. From the end of each piece, repeatedly split off the *attached* tokens ``. , ? ;`` and the
   possessive ``'s`` (only while something is left in front of them). The rest of the piece is one
   word. So ``Marc's's`` -> ``Marc 's 's``, ``have?`` -> ``have ?``, ``6.`` -> ``6 .``; hyphens,
   ``&``, inner apostrophes (``'n``) and non-ASCII letters stay inside words.
3. Decoding writes every token with one space before it, except the first token and the attached
   tokens, which are glued to the previous one. Pad ids are skipped. Because of rule 2 this restores
   every valid text exactly; ``encode`` refuses the few texts it could not restore (an attached
   token standing alone after a space, e.g. ``"6 ."``).

Special tokens are written ``<pad>``, ``<bos>``, ``<eos>``, ``<problem>``, ``<solution>``,
``<answer>``, ``<start>``, ``<end>``, ``<mid>``; ``decode`` prints them and ``encode`` reads them
back, so ``encode(decode(ids)) == ids`` for any ids without pad.

Id layout is fixed (never depends on the run): specials 0-8 (pad = 0), numbers "0".."22" at 9-31
(``number_ids[v]``), the 52 variable letters a-z, A-Z at 32-83 (the order of the official
``feasible_symbols``), the template words, then every remaining word of the name tables in sorted
order. Digits and single letters inside names (``Caudal Vertebrae 1``, ``B Cells``) share the number
and letter ids.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Sequence
from functools import cache

from physics_lm.data.igsm.text import names

SPECIALS: tuple[str, ...] = (
    "<pad>",
    "<bos>",
    "<eos>",
    "<problem>",
    "<solution>",
    "<answer>",
    "<start>",
    "<end>",
    "<mid>",
)
NUMBERS: tuple[str, ...] = tuple(str(v) for v in range(23))
LETTERS: tuple[str, ...] = tuple(string.ascii_lowercase + string.ascii_uppercase)
ATTACHED: tuple[str, ...] = (".", ",", "?", ";", "'s")
TEMPLATE_WORDS: tuple[str, ...] = (
    *ATTACHED,
    "=",
    "+",
    "-",
    "*",
    "The",
    "number",
    "of",
    "each",
    "equals",
    "more",
    "than",
    "times",
    "as",
    "much",
    "the",
    "sum",
    "difference",
    "and",
    "How",
    "many",
    "does",
    "have",
    "Define",
    "so",
    "BACK",
)


def split_piece(piece: str) -> list[str]:
    """Splits one space-free piece into its word and the attached tokens after it (rule 2)."""
    suffixes: list[str] = []
    core = piece
    while True:
        for suf in ATTACHED:
            if len(core) > len(suf) and core.endswith(suf):
                core = core[: -len(suf)]
                suffixes.append(suf)
                break
        else:
            break
    return [core, *reversed(suffixes)]


def split_words(text: str) -> list[str]:
    """Splits text into word tokens (no id lookup); raises ValueError on empty pieces."""
    words: list[str] = []
    offset = 0
    for n, piece in enumerate(text.split(" ")):
        if not piece:
            raise ValueError(
                f"cannot tokenise exactly: empty word at character {offset} "
                "(leading, trailing or double space)"
            )
        parts = split_piece(piece)
        if n > 0 and parts[0] in ATTACHED:
            raise ValueError(
                f"cannot tokenise exactly: {parts[0]!r} stands alone after a space at character "
                f"{offset}"
            )
        words.extend(parts)
        offset += len(piece) + 1
    return words


class Vocab:
    """Immutable word <-> id table; build it with :func:`get_vocab`."""

    def __init__(self, words: Sequence[str]) -> None:
        self.words: tuple[str, ...] = tuple(words)
        self._ids: dict[str, int] = {w: i for i, w in enumerate(self.words)}
        if len(self._ids) != len(self.words):
            raise ValueError("duplicate words in vocabulary")
        self.size: int = len(self.words)
        (
            self.pad_id,
            self.bos_id,
            self.eos_id,
            self.prob_id,
            self.sol_id,
            self.ans_id,
            self.start_id,
            self.end_id,
            self.mid_id,
        ) = (self._ids[s] for s in SPECIALS)
        self.back_id: int = self._ids["BACK"]
        self.number_ids: list[int] = [self._ids[w] for w in NUMBERS]
        self.letter_ids: list[int] = [self._ids[w] for w in LETTERS]
        self.attached_ids: frozenset[int] = frozenset(self._ids[w] for w in ATTACHED)
        self.special_ids: frozenset[int] = frozenset(self._ids[w] for w in SPECIALS)
        self._piece_cache: dict[str, list[int]] = {}

    def word_to_id(self, word: str) -> int:
        """Id of one token; KeyError names the word if it is not in the vocabulary."""
        try:
            return self._ids[word]
        except KeyError:
            raise KeyError(f"word {word!r} is not in the iGSM vocabulary") from None

    def encode(self, text: str) -> list[int]:
        """Text -> ids. ValueError names the unknown word and its character position."""
        ids: list[int] = []
        offset = 0
        cache_ = self._piece_cache
        for n, piece in enumerate(text.split(" ")):
            got = cache_.get(piece)
            if got is None:
                got = self._encode_piece(piece, offset, first=n == 0)
                if n > 0:
                    cache_[piece] = got
            ids.extend(got)
            offset += len(piece) + 1
        return ids

    def _encode_piece(self, piece: str, offset: int, first: bool) -> list[int]:
        if not piece:
            raise ValueError(
                f"cannot tokenise exactly: empty word at character {offset} "
                "(leading, trailing or double space)"
            )
        parts = split_piece(piece)
        if not first and parts[0] in ATTACHED:
            raise ValueError(
                f"cannot tokenise exactly: {parts[0]!r} stands alone after a space at character "
                f"{offset}"
            )
        out = []
        for w in parts:
            i = self._ids.get(w)
            if i is None:
                raise ValueError(f"unknown word {w!r} at character {offset} (in {piece!r})")
            out.append(i)
        return out

    def decode(self, ids: Iterable[int]) -> str:
        """Ids -> text; pad ids are skipped, specials are written as ``<name>``."""
        out: list[str] = []
        words, attached, pad = self.words, self.attached_ids, self.pad_id
        for i in ids:
            i = int(i)
            if i == pad:
                continue
            if out and i not in attached:
                out.append(" ")
            out.append(words[i])
        return "".join(out)

    def encode_name(self, name: str) -> list[int]:
        """Ids of one item or category name as it appears inside a text."""
        return self.encode(name)

    def encode_example(self, problem: str, solution: str, answer: str) -> list[int]:
        """The training layout ``<bos> <problem> P <solution> S <answer> A <eos>``."""
        return [
            self.bos_id,
            self.prob_id,
            *self.encode(problem),
            self.sol_id,
            *self.encode(solution),
            self.ans_id,
            *self.encode(answer),
            self.eos_id,
        ]

    def split_example(self, ids: Iterable[int]) -> tuple[str, str | None, str | None]:
        """Inverse of :meth:`encode_example` on a possibly truncated sequence.

        Returns (problem, solution, answer) texts; a part whose marker is missing is None. Tokens
        other than the markers' payloads (bos, eos, pad, probe markers) are dropped.
        """
        parts: dict[int, list[int]] = {self.prob_id: [], self.sol_id: [], self.ans_id: []}
        seen: set[int] = set()
        current: list[int] | None = None
        for i in ids:
            i = int(i)
            if i in parts:
                current = parts[i]
                seen.add(i)
            elif i == self.eos_id:
                break
            elif current is not None and i not in self.special_ids:
                current.append(i)
        return tuple(  # type: ignore[return-value]
            self.decode(parts[m]) if m in seen else None
            for m in (self.prob_id, self.sol_id, self.ans_id)
        )


def host_texts(vocab: Vocab, tokens: Iterable[int]) -> tuple[str, str, str, str]:
    """(problem, question, solution, answer) texts of one row rendered by the sampler."""
    problem, solution, answer = vocab.split_example(tokens)
    if problem is None or solution is None or answer is None:
        raise ValueError("row is truncated: raise seq_len")
    if problem.startswith("How many "):
        question = problem.split("? ", 1)[0] + "?"
    else:
        question = problem.rsplit(". ", 1)[-1]
    return problem, question, solution, answer


def _name_words() -> list[str]:
    words: set[str] = set()
    for cat in names.CATEGORIES:
        words.update(split_words(cat))
        for name in names.category_items(cat):
            words.update(split_words(name))
    return sorted(words)


@cache
def get_vocab() -> Vocab:
    """The process-wide vocabulary (deterministic: same ids in every run)."""
    fixed = [*SPECIALS, *NUMBERS, *LETTERS, *TEMPLATE_WORDS]
    seen = set(fixed)
    rest = [w for w in _name_words() if w not in seen]
    return Vocab(fixed + rest)
