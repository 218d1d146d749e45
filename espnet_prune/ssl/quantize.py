"""Dynamic int8 quantization of models with an SSL encoder, as ESPnet's inference does it.

``espnet2.bin.asr_inference --quantize_asr_model true`` (and ``slu_inference``) call
``torch.quantization.quantize_dynamic(model, qconfig_spec={torch.nn.<M> for M in
--quantize_modules}, dtype=--quantize_dtype)`` on the whole model, frontend included.
:func:`quantize_dynamic` makes that very call, so a model quantized here is the model those
tools decode with.

What it changes in :class:`~espnet_prune.ssl.model.SSLEncoder` with the default module set
(``Linear``): every ``nn.Linear`` -- the feature projection, the attention's q/k/v/out
projections, both FFN layers and WavLM's ``gru_rel_pos_linear`` -- becomes
``torch.ao.nn.quantized.dynamic.Linear`` (int8 weights, activations quantized per call).
The CNN and the positional convolution stay fp32 (``quantize_dynamic`` has no Conv1d
kernels), as do the two attention products (``scaled_dot_product_attention`` multiplies
activations by activations). Zero-size linear maps of a pruned model (a layer with every
head or every FFN unit removed but the sublayer kept) are
:class:`~espnet_prune.ssl.model.EmptyLinear`, a class of their own that quantization
skips: quantizing them gives NaN or wrong values. :func:`quantization_summary` says
which modules were replaced.
"""

import warnings
from collections import Counter
from typing import Dict, Sequence

import torch
from torch import nn

from espnet_prune.ssl.model import EmptyLinear

#: ``asr_inference``'s defaults for ``--quantize_modules`` and ``--quantize_dtype``.
ESPNET_QUANTIZE_MODULES = ("Linear",)
ESPNET_QUANTIZE_DTYPE = "qint8"


def quantize_dynamic(model: nn.Module, modules: Sequence[str] = ESPNET_QUANTIZE_MODULES,
                     dtype: str = ESPNET_QUANTIZE_DTYPE) -> nn.Module:
    """A dynamically quantized copy of ``model``, exactly as ``--quantize_asr_model true`` makes it.

    Args:
        model: any module (an ESPnet model, a frontend, an encoder); left unchanged.
        modules: names of ``torch.nn`` classes to quantize (``--quantize_modules``).
        dtype: ``qint8`` or ``float16`` (``--quantize_dtype``).
    Returns:
        the quantized copy, in eval mode.
    """
    unknown = [name for name in modules if not isinstance(getattr(nn, name, None), type)]
    if unknown:
        raise ValueError(f"quantize modules {unknown} are not torch.nn classes")
    if dtype not in ("qint8", "float16"):
        raise ValueError(f"quantize dtype must be qint8 or float16, got {dtype!r}")
    qconfig_spec = {getattr(nn, name) for name in modules}
    with warnings.catch_warnings():
        # torch.ao.quantization's deprecation notice; ESPnet 202511 still uses this API.
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        return torch.quantization.quantize_dynamic(model.eval(), qconfig_spec=qconfig_spec,
                                                   dtype=getattr(torch, dtype))


def quantization_summary(model: nn.Module) -> Dict[str, int]:
    """Counts of the linear-like modules of ``model`` by kind.

    Returns:
        ``{"int8_linear": dynamically quantized Linear, "float_linear": nn.Linear left in
        floating point, "empty_linear": zero-size EmptyLinear, "conv": Conv1d (never
        quantized dynamically)}``.
    """
    from torch.ao.nn.quantized.dynamic import Linear as DynamicLinear

    counts: Counter = Counter({"int8_linear": 0, "float_linear": 0, "empty_linear": 0, "conv": 0})
    for module in model.modules():
        if isinstance(module, DynamicLinear):
            counts["int8_linear"] += 1
        elif isinstance(module, EmptyLinear):
            counts["empty_linear"] += 1
        elif isinstance(module, nn.Linear):
            counts["float_linear"] += 1
        elif isinstance(module, nn.Conv1d):
            counts["conv"] += 1
    return dict(counts)
