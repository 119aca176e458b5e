"""The readers of users' own text: .txt, .jsonl and .parquet files, or folders of them."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from memcap.corpus.extract import _clean
from memcap.corpus.registry import CorpusError

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
