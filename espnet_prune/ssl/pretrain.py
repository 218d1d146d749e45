"""Self-supervised pretraining of an :class:`~espnet_prune.ssl.model.SSLEncoder`, HuBERT style.

HuBERT's first iteration, without labels: every frame of the unlabelled audio gets the
index of its nearest k-means centroid of MFCC features (13 coefficients with deltas and
delta-deltas, standardised), spans of the projected CNN features are replaced by a learned
mask embedding, and the Transformer learns to predict the cluster of every masked frame
(cross-entropy over cosine similarities with one learned embedding per cluster, as in the
HuBERT paper). Only the encoder (torchaudio's parameter names) is kept for fine-tuning; the
mask embedding and the prediction head are training-time only.

The MFCC frames are cut with the CNN's receptive field as window and its total stride as
hop, so that frame ``t`` of the targets covers the same samples as frame ``t`` of the CNN.

Everything depends only on the data and the arguments: the same seed, data, torch version
and number of threads give the same encoder.
"""

import math
import time
from dataclasses import asdict, dataclass
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

from espnet_prune.ssl.config import EncoderConfig, receptive_field
from espnet_prune.ssl.model import SSLEncoder


def conv_stride(config: EncoderConfig) -> int:
    """Samples between two CNN output frames (320 for the released models)."""
    return math.prod(stride for _, _, stride in config.conv_layers)


class MfccFrames(nn.Module):
    """MFCC + deltas + delta-deltas on the CNN's frame grid.

    Args:
        config: the encoder whose CNN sets the window (receptive field) and hop (total stride).
        num_coefficients: MFCC coefficients before the deltas.
        num_mels: mel filters.
    """

    def __init__(self, config: EncoderConfig, num_coefficients: int = 13, num_mels: int = 40):
        super().__init__()
        window = receptive_field(config.conv_layers)
        self.mfcc = torchaudio.transforms.MFCC(
            sample_rate=config.sample_rate, n_mfcc=num_coefficients,
            melkwargs=dict(n_fft=window, win_length=window, hop_length=conv_stride(config), n_mels=num_mels,
                           center=False))

    @property
    def dim(self) -> int:
        return 3 * self.mfcc.n_mfcc

    def forward(self, waveform: Tensor) -> Tensor:
        """``(S,)`` -> ``(T, 3 * num_coefficients)`` with ``T`` the CNN's number of frames."""
        coefficients = self.mfcc(waveform)  # (n_mfcc, T)
        deltas = torchaudio.functional.compute_deltas(coefficients)
        return torch.cat([coefficients, deltas, torchaudio.functional.compute_deltas(deltas)]).T


def kmeans(points: Tensor, num_clusters: int, iterations: int = 30, seed: int = 0) -> Tensor:
    """Lloyd's k-means with k-means++ initialisation.

    Args:
        points: ``(N, F)``, ``N >= num_clusters``.
        num_clusters: K.
        iterations: Lloyd iterations after the initialisation.
        seed: seed of the initialisation.
    Returns:
        ``(K, F)`` centroids.
    """
    if points.shape[0] < num_clusters:
        raise ValueError(f"k-means needs at least {num_clusters} frames, got {points.shape[0]}: "
                         "use more or longer utterances, or fewer clusters")
    generator = torch.Generator().manual_seed(seed)
    centroids = [points[torch.randint(points.shape[0], (1,), generator=generator)]]
    distance = torch.cdist(points, centroids[0]).squeeze(1) ** 2
    for _ in range(num_clusters - 1):
        index = torch.multinomial(distance / distance.sum(), 1, generator=generator)
        centroids.append(points[index])
        distance = torch.minimum(distance, torch.cdist(points, centroids[-1]).squeeze(1) ** 2)
    centroids = torch.cat(centroids)
    for _ in range(iterations):
        assignment = torch.cdist(points, centroids).argmin(1)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, points)
        counts = torch.bincount(assignment, minlength=num_clusters).to(points.dtype)
        # An empty cluster keeps its centroid.
        centroids = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centroids)
    return centroids


@dataclass
class ClusterTargets:
    """Frame labels: the nearest k-means centroid of standardised MFCC frames.

    Attributes:
        mean, std: ``(F,)`` statistics of the MFCC frames the centroids were fitted on.
        centroids: ``(K, F)`` in standardised units.
    """

    mean: Tensor
    std: Tensor
    centroids: Tensor

    @property
    def num_clusters(self) -> int:
        return self.centroids.shape[0]

    @classmethod
    def fit(cls, frames: Sequence[Tensor], num_clusters: int, seed: int = 0) -> "ClusterTargets":
        """Fit on every frame of ``frames`` (a list of ``(T_i, F)``)."""
        points = torch.cat(list(frames))
        mean, std = points.mean(0), points.std(0).clamp(min=1e-5)
        return cls(mean, std, kmeans((points - mean) / std, num_clusters, seed=seed))

    def __call__(self, frames: Tensor) -> Tensor:
        """``(T, F)`` MFCC frames -> ``(T,)`` cluster indices."""
        return torch.cdist((frames - self.mean) / self.std, self.centroids).argmin(1)

    def state_dict(self) -> Dict[str, Tensor]:
        return {"mean": self.mean, "std": self.std, "centroids": self.centroids}


def span_mask(frame_lengths: Tensor, num_frames: int, mask_prob: float, span: int,
              generator: torch.Generator) -> Tensor:
    """HuBERT/wav2vec 2.0 span masking: ``mask_prob * T / span`` spans of ``span`` frames per utterance.

    Spans may overlap, so the masked fraction is a little below ``mask_prob``; every
    utterance gets at least one span.

    Args:
        frame_lengths: ``(B,)`` valid frames.
        num_frames: ``T``, the padded length.
    Returns:
        ``(B, T)`` bool, True where the frame is masked (never at padding).
    """
    mask = torch.zeros(len(frame_lengths), num_frames, dtype=torch.bool)
    for row, length in enumerate(frame_lengths.tolist()):
        width = min(span, length)
        count = max(1, int(mask_prob * length / width + torch.rand((), generator=generator).item()))
        starts = torch.randint(length - width + 1, (count,), generator=generator)
        for start in starts.tolist():
            mask[row, start:start + width] = True
    return mask


class MaskedPrediction(nn.Module):
    """An encoder with HuBERT's masked-prediction head.

    Args:
        config: the encoder's architecture.
        num_clusters: K, the number of frame labels.
        projection_dim: width of the space where frames and cluster embeddings are compared.
        temperature: divides the cosine similarities (HuBERT: 0.1).
    """

    def __init__(self, config: EncoderConfig, num_clusters: int, projection_dim: int = 64,
                 temperature: float = 0.1):
        super().__init__()
        self.encoder = SSLEncoder(config)
        self.mask_embedding = nn.Parameter(torch.empty(config.embed_dim).uniform_())
        self.projection = nn.Linear(config.embed_dim, projection_dim)
        self.cluster_embeddings = nn.Parameter(torch.randn(num_clusters, projection_dim))
        self.temperature = temperature

    def forward(self, waveforms: Tensor, lengths: Tensor, targets: Tensor,
                masker: Callable[[Tensor, int], Tensor]) -> Tuple[Tensor, Tensor]:
        """
        Args:
            waveforms: ``(B, S)``; lengths: ``(B,)`` valid samples.
            targets: ``(B, T')`` cluster indices, ``-1`` at padding (cut or padded to the ``T`` frames).
            masker: ``(frame_lengths, T) -> (B, T)`` bool mask (see :func:`span_mask`).
        Returns:
            ``(loss, accuracy)`` over the masked frames.
        """
        features, frame_lengths = self.encoder.project(waveforms, lengths)
        masked = masker(frame_lengths, features.shape[1]).to(features.device)
        features = torch.where(masked[:, :, None], self.mask_embedding.to(features.dtype), features)
        hidden = self.encoder.contextualize(features, frame_lengths)[-1]
        num_frames = features.shape[1]
        targets = F.pad(targets, (0, max(0, num_frames - targets.shape[1])), value=-1)[:, :num_frames]
        masked = masked & (targets >= 0)
        logits = F.cosine_similarity(self.projection(hidden[masked])[:, None, :],
                                     self.cluster_embeddings[None, :, :], dim=-1) / self.temperature
        labels = targets[masked]
        return F.cross_entropy(logits, labels), (logits.argmax(-1) == labels).float().mean()


@dataclass
class PretrainSettings:
    """How :func:`pretrain` trains (stored with the encoder).

    Attributes:
        steps: optimizer steps.
        batch_size: utterances per step.
        max_seconds: longer utterances are cropped at random to this length.
        num_clusters: k-means clusters (frame labels).
        kmeans_utterances: utterances whose frames fit the k-means.
        mask_prob, mask_span: span masking (see :func:`span_mask`).
        lr: peak Adam learning rate; warmup_fraction of the steps ramp to it, then it decays linearly.
        grad_clip: gradient norm clipping.
        log_every: steps between loss records.
        seed: seed of k-means, initialisation, batches, crops and masks.
    """

    steps: int = 3000
    batch_size: int = 8
    max_seconds: float = 4.0
    num_clusters: int = 50
    kmeans_utterances: int = 500
    mask_prob: float = 0.65
    mask_span: int = 5
    lr: float = 1e-3
    warmup_fraction: float = 0.08
    grad_clip: float = 10.0
    log_every: int = 50
    seed: int = 0

    def __post_init__(self):
        for name in ("steps", "batch_size", "num_clusters", "kmeans_utterances", "mask_span", "log_every"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not 0.0 < self.mask_prob < 1.0:
            raise ValueError(f"mask_prob must be in (0, 1), got {self.mask_prob}")
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(f"warmup_fraction must be in [0, 1), got {self.warmup_fraction}")
        for name in ("max_seconds", "lr", "grad_clip"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


def _batch(waveforms: Sequence[Tensor], labels: Sequence[Tensor], indices: Sequence[int], crop: int, stride: int,
           generator: torch.Generator) -> Tuple[Tensor, Tensor, Tensor]:
    """Crop (on the frame grid) and pad the chosen utterances: waveforms, lengths, targets."""
    chosen = []
    for index in indices:
        wave, label = waveforms[index], labels[index]
        if wave.shape[0] > crop:
            first_frame = int(torch.randint((wave.shape[0] - crop) // stride + 1, (), generator=generator))
            wave = wave[first_frame * stride:first_frame * stride + crop]
            label = label[first_frame:]
        chosen.append((wave, label))
    lengths = torch.tensor([wave.shape[0] for wave, _ in chosen])
    batch = torch.zeros(len(chosen), int(lengths.max()))
    targets = torch.full((len(chosen), max(label.shape[0] for _, label in chosen)), -1, dtype=torch.long)
    for row, (wave, label) in enumerate(chosen):
        batch[row, :wave.shape[0]] = wave
        targets[row, :label.shape[0]] = label
    return batch, lengths, targets


def pretrain(config: EncoderConfig, waveforms: Sequence[np.ndarray], settings: PretrainSettings,
             log: Callable[[str], None] = print) -> Tuple[SSLEncoder, Dict]:
    """Pretrain an encoder of architecture ``config`` on unlabelled ``waveforms``.

    Args:
        config: the architecture (its dropouts and LayerDrop apply during pretraining).
        waveforms: ``(S_i,)`` float waveforms at ``config.sample_rate``, each at least the
            CNN's receptive field long.
        settings: see :class:`PretrainSettings`.
        log: receives a progress line every ``settings.log_every`` steps.
    Returns:
        ``(encoder, record)``: the trained encoder (eval mode) and a JSON-able record with the
        settings, the cluster sizes, the loss/accuracy curve and the wall time.
    """
    started = time.monotonic()
    shortest = receptive_field(config.conv_layers)
    waves = [torch.as_tensor(np.asarray(wave, dtype=np.float32)) for wave in waveforms]
    too_short = [index for index, wave in enumerate(waves) if wave.ndim != 1 or wave.shape[0] < shortest]
    if too_short:
        raise ValueError(f"{len(too_short)} of {len(waves)} waveforms (first: #{too_short[0]}) are not 1-d or are "
                         f"shorter than the CNN's receptive field of {shortest} samples")
    if len(waves) < settings.batch_size:
        raise ValueError(f"{len(waves)} utterances are fewer than batch_size={settings.batch_size}")
    torch.manual_seed(settings.seed)
    generator = torch.Generator().manual_seed(settings.seed)
    features = MfccFrames(config)
    with torch.no_grad():
        mfcc = [features(wave) for wave in waves]
        fit_on = torch.randperm(len(waves), generator=generator)[:settings.kmeans_utterances].tolist()
        clusters = ClusterTargets.fit([mfcc[index] for index in fit_on], settings.num_clusters, settings.seed)
        labels = [clusters(frames) for frames in mfcc]
    sizes = torch.bincount(torch.cat(labels), minlength=settings.num_clusters)
    log(f"k-means: {settings.num_clusters} clusters of MFCC frames from {len(fit_on)} utterances; "
        f"{int((sizes == 0).sum())} unused, largest holds {sizes.max().item() / sizes.sum().item():.1%} of frames")

    model = MaskedPrediction(config, settings.num_clusters)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr)
    warmup = max(1, int(settings.warmup_fraction * settings.steps))
    decay = max(1, settings.steps - warmup)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: min((step + 1) / warmup, max(0.0, (settings.steps - step) / decay)))
    stride = conv_stride(config)
    crop = max(shortest, int(settings.max_seconds * config.sample_rate) // stride * stride)

    def masker(frame_lengths: Tensor, num_frames: int) -> Tensor:
        return span_mask(frame_lengths, num_frames, settings.mask_prob, settings.mask_span, generator)

    curve: List[Dict] = []
    order: List[int] = []
    window_loss, window_accuracy = [], []
    for step in range(1, settings.steps + 1):
        if len(order) < settings.batch_size:
            order += torch.randperm(len(waves), generator=generator).tolist()
        indices, order = order[:settings.batch_size], order[settings.batch_size:]
        batch, lengths, targets = _batch(waves, labels, indices, crop, stride, generator)
        loss, accuracy = model(batch, lengths, targets, masker)
        optimizer.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), settings.grad_clip)
        optimizer.step()
        scheduler.step()
        window_loss.append(loss.item())
        window_accuracy.append(accuracy.item())
        if step % settings.log_every == 0 or step == settings.steps:
            point = dict(step=step, loss=float(np.mean(window_loss)), accuracy=float(np.mean(window_accuracy)))
            curve.append(point)
            window_loss, window_accuracy = [], []
            log(f"step {step}/{settings.steps}: masked-prediction loss {point['loss']:.3f}, "
                f"accuracy {point['accuracy']:.1%} ({time.monotonic() - started:.0f} s)")
    encoder = model.encoder.eval()
    record = dict(objective="hubert_iteration1_mfcc_kmeans", settings=asdict(settings), arch=config.to_dict(),
                  num_utterances=len(waves), hours=sum(w.shape[0] for w in waves) / config.sample_rate / 3600,
                  cluster_sizes=sizes.tolist(), chance_loss=math.log(settings.num_clusters), curve=curve,
                  wall_seconds=time.monotonic() - started)
    return encoder, record
