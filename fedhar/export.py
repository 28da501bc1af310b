"""Export a fine-tuned classifier for devices (TorchScript, ONNX) and check it against PyTorch.

Any ``batch -> logits`` model (``FusionClassifierModel``, a supervised baseline) is
wrapped in :class:`PositionalClassifier`, which takes one tensor per modality in a fixed
order, so that exported graphs have plain positional inputs named after the modalities.
The modality order, per-sample shapes, class names and (optionally) the training
normalisation statistics travel inside the exported file (TorchScript extra file
``fedhar.json``; ONNX ``metadata_props["fedhar"]``), so the device needs nothing else to
feed it raw windows. ``onnx`` / ``onnxruntime`` are imported only when
an ONNX function is called.
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from fedhar.data.normalization import Normalizer
from fedhar.errors import ExportError

__all__ = [
    "EquivalenceReport",
    "ExportMetadata",
    "PositionalClassifier",
    "StaticAdaptiveAvgPool",
    "check_equivalence",
    "export_onnx",
    "export_torchscript",
    "load_exported",
    "normalization_of",
    "with_static_pooling",
]

logger = logging.getLogger(__name__)

#: Name of the metadata entry in both formats.
METADATA_KEY = "fedhar"
#: ONNX opset of the exported graph (GRU, index_put and softmax are all covered).
ONNX_OPSET = 17
#: Default tolerance on logits between PyTorch and an exported model.
DEFAULT_ATOL = 1e-4
LOGITS = "logits"
BATCH_AXIS = "batch"
#: Batch size of the example input used for tracing (>1 so no size-1 special case is baked in).
TRACE_BATCH = 4

Runner = Callable[[Mapping[str, np.ndarray]], np.ndarray]


@dataclass(frozen=True)
class ExportMetadata:
    """What a device needs to feed an exported model.

    Parameters
    ----------
    modalities
        Input order of the exported graph (input ``i`` is ``modalities[i]``).
    shapes
        Per-sample shape of each modality, time first (e.g. ``(120, 6)``).
    class_names
        Class name of each logit (may be empty: classes are then shown as indices).
    normalization
        Modality -> ``{"mean": [...], "scale": [...]}`` per channel: raw windows are fed as
        ``(x - mean) / scale`` (:meth:`normalize`). Empty: the model takes normalised windows.
    """

    modalities: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    class_names: tuple[str, ...] = ()
    normalization: Mapping[str, Mapping[str, list[float]]] = field(default_factory=dict)

    def to_json(self) -> str:
        """Serialise (lists for tuples)."""
        return json.dumps({**asdict(self), "normalization": {m: dict(v) for m, v in self.normalization.items()}})

    @classmethod
    def from_json(cls, text: str) -> ExportMetadata:
        """Parse :meth:`to_json` output."""
        raw = json.loads(text)
        return cls(tuple(raw["modalities"]), tuple(tuple(s) for s in raw["shapes"]), tuple(raw.get("class_names", ())),
                   dict(raw.get("normalization", {})))

    def normalize(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Raw windows -> what the model takes: ``(x - mean) / scale`` per channel, float32, as in training.

        Computed in float64 like :meth:`fedhar.data.normalization.Normalizer.apply`, so the
        result is bit-identical to the training pipeline's.

        Raises
        ------
        ExportError
            If the metadata holds no statistics for a modality of ``inputs``.
        """
        missing = [m for m in inputs if m not in self.normalization]
        if missing:
            raise ExportError(f"the exported model carries no normalisation statistics for {missing}")
        return {m: ((np.asarray(x) - np.asarray(self.normalization[m]["mean"], np.float64))
                    / np.asarray(self.normalization[m]["scale"], np.float64)).astype(np.float32)
                for m, x in inputs.items()}


def normalization_of(normalizer: Normalizer, modalities: Sequence[str]) -> dict[str, dict[str, list[float]]]:
    """The :attr:`ExportMetadata.normalization` entry of ``modalities`` from a fitted normaliser.

    Raises
    ------
    ExportError
        If the normaliser has no statistics for one of ``modalities``.
    """
    missing = [m for m in modalities if m not in normalizer.stats.moments]
    if missing:
        raise ExportError(f"the normalisation statistics lack modalities {missing}")
    return {m: {"mean": normalizer.stats.mean(m).tolist(), "scale": normalizer.scale(m).tolist()} for m in modalities}


class PositionalClassifier(nn.Module):
    """``forward(x_1, ..., x_M) -> logits (B, K)`` around a ``forward(batch: Mapping) -> logits`` model.

    Parameters
    ----------
    model
        The classifier; its ``forward`` takes modality -> ``(B, *shape)``.
    modalities
        Positional input order.

    Raises
    ------
    ValueError
        If ``modalities`` is empty or has duplicates; in ``forward``, if the number of
        tensors differs from the number of modalities.
    """

    def __init__(self, model: nn.Module, modalities: Sequence[str]) -> None:
        super().__init__()
        if not modalities or len(set(modalities)) != len(modalities):
            raise ValueError(f"modalities must be non-empty and unique, got {list(modalities)}")
        self.model = model
        self.modalities = tuple(modalities)

    def forward(self, *inputs: Tensor) -> Tensor:
        """Logits of one batch given as one tensor per modality, in ``self.modalities`` order."""
        if len(inputs) != len(self.modalities):
            raise ValueError(f"expected {len(self.modalities)} tensors {self.modalities}, got {len(inputs)}")
        return self.model(dict(zip(self.modalities, inputs, strict=True)))


@dataclass(frozen=True)
class EquivalenceReport:
    """How closely an exported model reproduces PyTorch's logits.

    Parameters
    ----------
    max_abs_diff
        Largest absolute difference between the two logit arrays.
    agreement
        Fraction of samples whose arg-max class is the same.
    num_samples
        Samples compared.
    logit_scale
        Largest absolute PyTorch logit (a closed-form LDA head's logits reach ~1e5, where
        float32 rounding alone exceeds any fixed absolute tolerance).
    """

    max_abs_diff: float
    agreement: float
    num_samples: int
    logit_scale: float = 1.0

    def passed(self, atol: float = DEFAULT_ATOL) -> bool:
        """Whether logits match within ``atol x max(1, logit_scale)`` and every prediction agrees."""
        return self.max_abs_diff <= atol * max(1.0, self.logit_scale) and self.agreement == 1.0


def _example_inputs(meta: ExportMetadata, batch: int = TRACE_BATCH, seed: int = 0) -> tuple[Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    return tuple(torch.randn(batch, *shape, generator=gen) for shape in meta.shapes)


def _wrap(model: nn.Module, meta: ExportMetadata) -> PositionalClassifier:
    wrapper = PositionalClassifier(model, meta.modalities)
    wrapper.eval()
    return wrapper


def export_torchscript(model: nn.Module, meta: ExportMetadata, path: Path, method: str = "trace") -> Path:
    """Save ``model`` (eval mode) as TorchScript with ``meta`` embedded.

    Parameters
    ----------
    model
        ``batch -> logits`` classifier.
    meta
        Input order, shapes and class names.
    path
        Output file (``.ts`` / ``.pt``).
    method
        ``"trace"`` (works for every fedhar model: the modality set is fixed at export)
        or ``"script"`` (keeps Python control flow; fails on models using ``Mapping`` inputs).

    Raises
    ------
    ValueError
        Unknown ``method``.
    ExportError
        If tracing / scripting fails.
    """
    if method not in ("trace", "script"):
        raise ValueError(f"method must be 'trace' or 'script', got {method!r}")
    wrapper = _wrap(model, meta)
    try:
        with torch.no_grad():
            module = (torch.jit.trace(wrapper, _example_inputs(meta), check_trace=False) if method == "trace"
                      else torch.jit.script(wrapper))
    except Exception as err:  # torch raises many types here
        raise ExportError(f"TorchScript {method} failed: {err}; try method='trace'", path) from err
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(module, str(path), _extra_files={f"{METADATA_KEY}.json": meta.to_json()})
    logger.info("TorchScript (%s) written to %s", method, path)
    return path


class StaticAdaptiveAvgPool(nn.Module):
    """Adaptive average pooling for one known input size, as a matrix product per pooled axis.

    The TorchScript-based ONNX exporter cannot export ``AdaptiveAvgPool`` when an output
    size is ``None`` or does not divide the input size (fedhar's compact IMU encoder pools
    15 steps to 8). Window ``i`` of an axis of length ``n`` pooled to ``k`` spans
    ``[floor(i n / k), ceil((i + 1) n / k))``, exactly as PyTorch's adaptive pooling.

    Parameters
    ----------
    in_size
        Spatial input size (the trailing ``len(in_size)`` axes).
    out_size
        Output size per spatial axis (``None``: keep that axis).
    """

    def __init__(self, in_size: Sequence[int], out_size: Sequence[int | None]) -> None:
        super().__init__()
        self.num_axes = len(in_size)
        for axis, (n, k) in enumerate(zip(in_size, out_size, strict=True)):
            k = n if k is None else k
            weights = torch.zeros(k, n)
            for i in range(k):
                start, end = (i * n) // k, -((-(i + 1) * n) // k)
                weights[i, start:end] = 1.0 / (end - start)
            self.register_buffer(f"pool{axis}", weights.T.contiguous())  # (n, k)

    def forward(self, x: Tensor) -> Tensor:
        """Pool the trailing spatial axes of ``x``."""
        for axis in range(self.num_axes):
            last = x.dim() - 1  # positive axes: the ONNX exporter writes negative ones into Transpose perms
            dim = last + 1 - self.num_axes + axis
            x = torch.movedim(torch.movedim(x, dim, last) @ getattr(self, f"pool{axis}"), last, dim)
        return x


_ADAPTIVE = (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d)


def with_static_pooling(model: nn.Module, meta: ExportMetadata) -> nn.Module:
    """A deep copy of ``model`` whose adaptive average pools are :class:`StaticAdaptiveAvgPool` for ``meta``'s shapes."""
    model = copy.deepcopy(model).eval()
    seen: dict[str, tuple[int, ...]] = {}
    pools = {name: mod for name, mod in model.named_modules() if isinstance(mod, _ADAPTIVE)}
    hooks = [mod.register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, tuple(i[0].shape)))
             for name, mod in pools.items()]
    with torch.no_grad():
        _wrap(model, meta)(*_example_inputs(meta))
    for hook in hooks:
        hook.remove()
    for name, mod in pools.items():
        if name not in seen:
            continue  # not on the path of these modalities
        axes = int(type(mod).__name__[-2])
        size = mod.output_size if isinstance(mod.output_size, tuple) else (mod.output_size,) * axes
        parent, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, child,
                StaticAdaptiveAvgPool(seen[name][-axes:], size))
    return model


def export_onnx(model: nn.Module, meta: ExportMetadata, path: Path, opset: int = ONNX_OPSET) -> Path:
    """Save ``model`` (eval mode) as ONNX, dynamic batch axis, inputs named after the modalities.

    Uses the TorchScript-based exporter (``dynamo=False``: no ``onnxscript`` needed), then
    checks the graph with ``onnx.checker`` and embeds ``meta``.

    Raises
    ------
    ExportError
        If ``onnx`` is not installed, export fails, or the checker rejects the graph.
    """
    try:
        import onnx
    except ImportError as err:
        raise ExportError("the onnx package is not installed; pip install -e '.[export]'", path) from err
    wrapper = _wrap(with_static_pooling(model, meta), meta)
    names = list(meta.modalities)
    axes = {name: {0: BATCH_AXIS} for name in [*names, LOGITS]}
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with torch.no_grad():
            torch.onnx.export(wrapper, _example_inputs(meta), str(path), input_names=names, output_names=[LOGITS],
                              dynamic_axes=axes, opset_version=opset, dynamo=False)
        graph = onnx.load(str(path))
        onnx.checker.check_model(graph)
    except Exception as err:
        raise ExportError(f"ONNX export failed: {err}", path) from err
    entry = graph.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, meta.to_json()
    onnx.save(graph, str(path))
    logger.info("ONNX (opset %d) written to %s", opset, path)
    return path


def load_exported(path: Path, prefer_onnxruntime: bool = True) -> tuple[Runner, ExportMetadata]:
    """Load an exported model: a ``runner(inputs: modality -> (B, *shape)) -> logits`` and its metadata.

    ``.onnx`` runs on onnxruntime if installed (else ``onnx.reference.ReferenceEvaluator``,
    slow but exact); anything else is loaded as TorchScript.

    Raises
    ------
    ExportError
        If the file is missing, unreadable, or lacks fedhar's metadata.
    """
    if not path.is_file():
        raise ExportError("exported model not found", path)
    if path.suffix == ".onnx":
        return _load_onnx(path, prefer_onnxruntime)
    extra = {f"{METADATA_KEY}.json": ""}
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as err:
        raise ExportError(f"not a TorchScript file ({err})", path) from err
    if not extra[f"{METADATA_KEY}.json"]:
        raise ExportError("TorchScript file lacks fedhar.json metadata; export it with fedhar.export", path)
    meta = ExportMetadata.from_json(extra[f"{METADATA_KEY}.json"])
    module.eval()

    def run(inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            return module(*(torch.as_tensor(inputs[m], dtype=torch.float32) for m in meta.modalities)).numpy()

    return run, meta


def _load_onnx(path: Path, prefer_onnxruntime: bool) -> tuple[Runner, ExportMetadata]:
    try:
        import onnx
    except ImportError as err:
        raise ExportError("the onnx package is not installed; pip install -e '.[export]'", path) from err
    try:
        graph = onnx.load(str(path))
    except Exception as err:
        raise ExportError(f"not an ONNX file ({err})", path) from err
    props = {p.key: p.value for p in graph.metadata_props}
    if METADATA_KEY not in props:
        raise ExportError("ONNX file lacks fedhar metadata; export it with fedhar.export", path)
    meta = ExportMetadata.from_json(props[METADATA_KEY])
    session: Any
    try:
        if not prefer_onnxruntime:
            raise ImportError
        import onnxruntime

        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])

        def run(inputs: Mapping[str, np.ndarray]) -> np.ndarray:
            feed = {m: np.asarray(inputs[m], dtype=np.float32) for m in meta.modalities}
            return np.asarray(session.run([LOGITS], feed)[0])
    except ImportError:
        from onnx.reference import ReferenceEvaluator

        logger.info("onnxruntime not available: running %s with onnx.reference (slow)", path)
        session = ReferenceEvaluator(graph)

        def run(inputs: Mapping[str, np.ndarray]) -> np.ndarray:
            feed = {m: np.asarray(inputs[m], dtype=np.float32) for m in meta.modalities}
            return np.asarray(session.run(None, feed)[0])

    return run, meta


def check_equivalence(model: nn.Module, runner: Runner, inputs: Mapping[str, np.ndarray]) -> EquivalenceReport:
    """Compare PyTorch logits of ``model`` (eval mode) with ``runner``'s on the same ``inputs``.

    Parameters
    ----------
    model
        The reference ``batch -> logits`` model.
    runner
        An exported model, from :func:`load_exported`.
    inputs
        Modality -> ``(B, *shape)`` float32 arrays.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            reference = model({m: torch.as_tensor(v, dtype=torch.float32) for m, v in inputs.items()}).numpy()
    finally:
        model.train(was_training)
    exported = runner(inputs)
    if exported.shape != reference.shape:
        raise ExportError(f"exported logits have shape {exported.shape}, PyTorch's {reference.shape}")
    report = EquivalenceReport(float(np.abs(exported - reference).max()),
                               float(np.mean(exported.argmax(1) == reference.argmax(1))), len(reference),
                               float(np.abs(reference).max()))
    logger.info("equivalence: max |diff| %.2e, prediction agreement %.3f over %d samples",
                report.max_abs_diff, report.agreement, report.num_samples)
    return report
