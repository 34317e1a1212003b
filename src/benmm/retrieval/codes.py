"""Binary hash codes from float embeddings: PCA, then an ITQ rotation, then the sign.

Method (Gong & Lazebnik, "Iterative Quantization", CVPR 2011):

1. centre the embeddings (subtract the mean ``mu``) and project them on their top ``bits`` principal
   directions ``W`` (``V = (X - mu) W``);
2. learn an orthogonal rotation ``R`` that minimises the quantisation loss ``||sign(VR) - VR||_F``
   by alternating ``B = sign(VR)`` and the orthogonal Procrustes solution ``R = U S'`` of
   ``svd(V^T B) = U S S'``;
3. a code is ``sign((x - mu) W R) > 0`` packed into ``bits / 8`` bytes (the layout of FAISS binary indexes).

The fitted encoder is just ``mu`` and the matrix ``P = W R`` (kept as plain arrays in a safetensors file),
so encoding a query is one matrix product. It is written here with numpy rather than with
``faiss.ITQTransform`` because that object can only be saved in FAISS's own serialisation and does not
expose the single projection matrix we store; the test suite checks that ITQ lowers the quantisation loss
below plain PCA signs and that codes keep neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load_file, save_file

from benmm.errors import RetrievalError

#: embeddings used to fit the PCA at most, and to learn the ITQ rotation (a random sample beyond that:
#: a bits x bits rotation is well determined by tens of thousands of points, and each ITQ iteration costs
#: two [sample, bits] x [bits, bits] products)
FIT_SAMPLE = 200_000
ITQ_SAMPLE = 10_000


def _check_bits(bits: int, dim: int, n: int) -> None:
    if bits < 8 or bits % 8:
        raise RetrievalError(f"code length must be a positive multiple of 8 bits, got {bits}")
    if bits > dim:
        fit = max(8, dim - dim % 8)
        raise RetrievalError(f"{bits}-bit codes need embeddings of at least {bits} dimensions, got {dim}; "
                             f"use --bits {fit} (or fewer, a multiple of 8), or --kind flat")
    if n < 2:
        raise RetrievalError(f"fitting binary codes needs at least 2 embeddings, got {n}")


@dataclass(frozen=True)
class BinaryEncoder:
    """``code(x) = packbits((x - mean) @ projection > 0)``."""

    mean: np.ndarray  # [D] float32
    projection: np.ndarray  # [D, bits] float32 (PCA basis times ITQ rotation)

    @property
    def dim(self) -> int:
        return int(self.projection.shape[0])

    @property
    def bits(self) -> int:
        return int(self.projection.shape[1])

    def project(self, x: np.ndarray) -> np.ndarray:
        """Real-valued projections ``(x - mean) @ projection`` of ``[N, D]`` embeddings."""
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise RetrievalError(f"embeddings must be [N, {self.dim}] for this encoder, got shape {x.shape}")
        return (x - self.mean) @ self.projection

    def encode(self, x: np.ndarray) -> np.ndarray:
        """Packed binary codes, ``uint8 [N, bits / 8]``."""
        return np.packbits(self.project(x) > 0, axis=1)

    def save(self, path: str | Path) -> None:
        save_file(
            {"mean": self.mean, "projection": self.projection},
            str(path),
            metadata={"format": "benmm-binary-encoder", "method": "pca+itq"},
        )

    @classmethod
    def load(cls, path: str | Path) -> BinaryEncoder:
        try:
            arrays = load_file(str(path))
            mean, proj = arrays["mean"], arrays["projection"]
        except (OSError, KeyError, ValueError, SafetensorError) as exc:
            raise RetrievalError(f"{path}: not a valid binary-code encoder file ({exc})") from None
        if mean.ndim != 1 or proj.ndim != 2 or proj.shape[0] != mean.shape[0]:
            raise RetrievalError(
                f"{path}: encoder arrays have inconsistent shapes {mean.shape}, {proj.shape}"
            )
        return cls(mean.astype(np.float32), proj.astype(np.float32))


def quantization_loss(v: np.ndarray) -> float:
    """Mean squared distance between projections and their signs (what ITQ minimises)."""
    return float(np.mean((np.where(v > 0, 1.0, -1.0) - v) ** 2))


def fit_itq(
    embeddings: np.ndarray, bits: int = 128, iterations: int = 50, seed: int = 0, rotate: bool = True
) -> BinaryEncoder:
    """Fit PCA (+ ITQ rotation unless ``rotate=False``) on ``[N, D]`` embeddings."""
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2:
        raise RetrievalError(f"embeddings must be a 2-D array [N, D], got shape {x.shape}")
    _check_bits(bits, x.shape[1], x.shape[0])
    if not np.isfinite(x).all():
        raise RetrievalError("embeddings contain NaN or infinite values: cannot fit binary codes")
    rng = np.random.default_rng(seed)
    if len(x) > FIT_SAMPLE:
        x = x[np.sort(rng.choice(len(x), FIT_SAMPLE, replace=False))]
    mean = x.mean(axis=0)
    xc = x - mean
    # PCA via the covariance eigen-decomposition (D x D: cheap for D <= a few thousand); float64 sums
    cov = (xc.T @ xc).astype(np.float64) / max(len(xc) - 1, 1)
    evals, evecs = np.linalg.eigh(cov)
    pca = evecs[:, np.argsort(evals)[::-1][:bits]]  # [D, bits]
    rotation = np.eye(bits)
    if rotate:
        sub = xc if len(xc) <= ITQ_SAMPLE else xc[rng.choice(len(xc), ITQ_SAMPLE, replace=False)]
        v = (sub @ pca).astype(np.float32)
        rotation = np.linalg.qr(rng.standard_normal((bits, bits)))[0].astype(np.float32)
        for _ in range(iterations):
            b = np.where(v @ rotation > 0, 1.0, -1.0).astype(np.float32)
            u, _, wt = np.linalg.svd((v.T @ b).astype(np.float64))
            rotation = (u @ wt).astype(np.float32)
    return BinaryEncoder(mean.astype(np.float32), (pca @ rotation.astype(np.float64)).astype(np.float32))


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distances ``[len(a), len(b)]`` between packed codes (numpy reference, used in tests)."""
    return np.bitwise_count(a[:, None, :] ^ b[None, :, :]).sum(axis=2).astype(np.int32)
