"""Documents streamed from a Hugging Face dataset with a "text" field (e.g. FineWeb)."""

from __future__ import annotations

import os

from memcap.corpus.extract import normalise
from memcap.corpus.registry import CorpusError, FetchError

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
