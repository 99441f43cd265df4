"""Export an openai-whisper ``Whisper`` into the four TorchScript modules Atelier runs.

Interfaces (B = batch rows, L = decoder layers, D = n_text_state, T = cached tokens):
  mel.ts          forward(pcm f32 [N]) -> f32 [n_mels, 1 + (N - 400) // 160]  (log10 power mel,
                  no centre padding, no max-8 clamp, no (x+4)/4)
  encoder.ts      forward(mel f32 [B, n_mels, 3000]) -> features [B, 1500, D]  (model dtype)
  cross_kv.ts     forward(features [B, 1500, D]) -> [L, 2, B, H, 1500, D/H]  (keys pre-scaled; model dtype)
  decoder_step.ts forward(tokens i64 [B, Tq], positions i64 [Tq], cross_kv [L, 2, B, H, 1500, D/H],
                          self_cache [L, 2, B, T, D])
                  -> (logits f32 [B, n_vocab], new_cache [L, 2, B, T + 1, D],
                      align_qk f32 [B, n_alignment_heads, 1500])
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from .common import (ExportError, atomic_copy, staged_folder, load_wav_16k_mono, quiet_warnings, trace_and_save,
                     write_manifest, write_parity_reference)

N_FFT, HOP, SAMPLE_RATE, N_SAMPLES, N_FRAMES = 400, 160, 16000, 480000, 3000

DTYPES = {"float32": torch.float32, "float16": torch.float16}


def _whisper():
    import whisper
    import whisper.model as wm

    wm.MultiHeadAttention.use_sdpa = False  # the SDPA path does not trace ("is_causal must be bool")
    return whisper


# --------------------------------------------------------------------------- wrapper modules


# Bumped when the exported interface changes; older folders are re-exported by `demo`.
# 2: decoder_step takes Tq tokens per row (prompt prefill in one call).
# 3: cross_kv is [L, 2, B, H, ctx, D/H] with pre-scaled keys (no per-step rearrangement).
# 4: decoder_step takes cross_kv for N audios and B = N * G rows (beams share their audio).
# 5: decoder_step writes into a caller-owned cache buffer in place and returns (logits, align).
# 6: the encoder's attention is torch's scaled_dot_product_attention (openai's default).
EXPORT_VERSION = 6


class LogMel(nn.Module):
    """pcm [N] -> log10(mel power) [n_mels, 1 + (N - 400) // 160], every STFT frame kept."""

    def __init__(self, n_mels: int, device: torch.device):
        super().__init__()
        whisper = _whisper()
        filters = whisper.audio.mel_filters("cpu", n_mels).float()
        self.register_buffer("window", torch.hann_window(N_FFT).to(device))
        self.register_buffer("filters", filters.to(device))

    def forward(self, pcm: torch.Tensor) -> torch.Tensor:
        pcm = pcm.to(device=self.window.device, dtype=torch.float32)
        stft = torch.stft(pcm, N_FFT, HOP, window=self.window, center=False, return_complex=True)
        power = stft.abs() ** 2
        mel = self.filters @ power
        return torch.clamp(mel, min=1e-10).log10()


class Encoder(nn.Module):
    def __init__(self, model, dtype: torch.dtype):
        super().__init__()
        self.encoder = model.encoder
        self.dtype = dtype

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        dev = self.encoder.conv1.weight.device
        return self.encoder(mel.to(device=dev, dtype=self.dtype))


class CrossKV(nn.Module):
    """audio features [B, ctx, D] -> [L, 2, B, H, ctx, D/H]: every layer's cross-attention
    keys (already multiplied by openai's scale, d_head ** -0.25) and values, split into
    heads once per window, so no decoder step has to rearrange 1500 x D per layer again."""

    def __init__(self, model, dtype: torch.dtype):
        super().__init__()
        # only the cross-attention key/value projections, so the archive carries nothing else
        self.keys = nn.ModuleList([b.cross_attn.key for b in model.decoder.blocks])
        self.values = nn.ModuleList([b.cross_attn.value for b in model.decoder.blocks])
        self.n_head = model.dims.n_text_head
        self.dtype = dtype
        # (a quantized Linear's weight is a method, so the device is read from the embedding)
        self.dev = model.decoder.token_embedding.weight.device

    def forward(self, audio_features: torch.Tensor) -> torch.Tensor:
        xa = audio_features.to(device=self.dev, dtype=self.dtype)
        kv = []
        for key, value in zip(self.keys, self.values):
            k, v = key(xa), value(xa)
            scale = (k.shape[-1] // self.n_head) ** -0.25
            k = k.view(*k.shape[:2], self.n_head, -1).permute(0, 2, 1, 3) * scale
            v = v.view(*v.shape[:2], self.n_head, -1).permute(0, 2, 1, 3)
            kv.append(torch.stack([k, v]))
        return torch.stack(kv).contiguous()


class DecoderStep(nn.Module):
    """Tq query tokens per row (Tq = 1 while sampling; the whole prompt at once when
    prefilling), against the cached self-attention keys/values of T earlier tokens.

    forward(tokens i64 [B,Tq], positions i64 [Tq] = T..T+Tq-1, cross_kv [L,2,N,H,1500,D/H],
            self_cache [L,2,B,C,D], past [T])
      -> (logits f32 [B,Tq,V], align_qk f32 [B,A,Tq,1500])

    B is a multiple of N: rows b*G .. b*G+G-1 (G = B / N) attend to audio b.
    self_cache is a buffer of C >= T + Tq slots (n_text_ctx) that the caller owns: slots
    0..T-1 hold the earlier tokens' keys and values, and the call writes this step's into
    slots T..T+Tq-1 in place. `past` only carries T in its shape (a traced int taken from a
    tensor's values would be frozen), so the attention reads slots 0..T+Tq-1 of the buffer.

    The causal mask is built from the positions with tensor ops only, so the trace stays
    valid for every Tq and T (a mask sliced with Python ints would be frozen by the trace).
    For Tq = 1 the mask is all zeros and the arithmetic is exactly openai's qkv_attention.
    """

    def __init__(self, model, alignment_heads: list[list[int]], dtype: torch.dtype):
        super().__init__()
        dec = model.decoder
        self.token_embedding = dec.token_embedding
        self.positional_embedding = dec.positional_embedding
        self.blocks = dec.blocks
        self.ln = dec.ln
        self.dtype = dtype
        # int8 exports: the output projection (tied to the token embedding) as a quantized Linear
        self.logits_proj = getattr(model, "quantized_logits", None)
        self.alignment_heads = [(int(l), int(h)) for l, h in alignment_heads]

    @staticmethod
    def _self_attention(attn, q, k, v, mask):
        # openai's MultiHeadAttention.qkv_attention (use_sdpa=False) with a rectangular mask.
        n_head = attn.n_head
        scale = (q.shape[-1] // n_head) ** -0.25
        q = q.view(*q.shape[:2], n_head, -1).permute(0, 2, 1, 3)
        k = k.view(*k.shape[:2], n_head, -1).permute(0, 2, 1, 3)
        v = v.view(*v.shape[:2], n_head, -1).permute(0, 2, 1, 3)
        qk = (q * scale) @ (k * scale).transpose(-1, -2)
        qk = (qk + mask.to(qk.dtype)).float()
        w = F.softmax(qk, dim=-1).to(q.dtype)
        return (w @ v).permute(0, 2, 1, 3).flatten(start_dim=2)

    def forward(self, tokens, positions, cross_kv, self_cache, past):
        dev = self.token_embedding.weight.device
        tokens = tokens.to(dev)
        positions = positions.to(dev)
        cross_kv = cross_kv.to(device=dev, dtype=self.dtype)
        # self_cache is written in place: the caller allocates it on the device, in the
        # model's dtype (a .to() that copied would lose the writes).

        # Rows come in groups of G = B / N per audio (N = cross_kv's batch): row b attends to
        # audio b // G. N = B is the plain case; N = 1 with B beams shares one audio.
        batch, tq = tokens.shape[0], tokens.shape[1]
        n_audio = cross_kv.shape[2]
        group = batch // n_audio
        x = self.token_embedding(tokens) + self.positional_embedding.index_select(0, positions)
        x = x.to(self.dtype)
        # Key positions 0..T+Tq-1 (the cache always starts at position 0); T = len(past).
        n_keys = past.shape[0] + tq
        key_pos = torch.cat([torch.ones_like(past, dtype=torch.float32),
                             torch.ones_like(positions, dtype=torch.float32)]).cumsum(0) - 1.0
        q_pos = positions.to(torch.float32)
        future = key_pos.unsqueeze(0) > q_pos.unsqueeze(1)
        mask = torch.zeros_like(future, dtype=torch.float32).masked_fill(future, float("-inf"))
        qks = []
        for i, block in enumerate(self.blocks):
            attn = block.attn
            h = block.attn_ln(x)
            q = attn.query(h)
            # This step's keys and values go into their slots; attention reads the first
            # T + Tq slots in place (no copy of the cache per step).
            self_cache[i, 0].index_copy_(1, positions, attn.key(h))
            self_cache[i, 1].index_copy_(1, positions, attn.value(h))
            k = self_cache[i, 0].narrow(1, 0, n_keys)
            v = self_cache[i, 1].narrow(1, 0, n_keys)
            x = x + attn.out(self._self_attention(attn, q, k, v, mask))

            cross = block.cross_attn
            h = block.cross_attn_ln(x)
            # openai's qkv_attention, with the keys pre-scaled and both split into heads. The
            # rows of one audio (beams, best-of samples) are queries against the same keys:
            # one [G*Tq, ctx] matrix product per head instead of G products of one row each
            # against G copies of the audio's keys and values.
            q = cross.query(h)
            n_head = cross.n_head
            scale = (q.shape[-1] // n_head) ** -0.25
            q = q.view(n_audio, group, tq, n_head, -1).permute(0, 3, 1, 2, 4)
            q = q.reshape(n_audio, n_head, group * tq, -1) * scale
            qk = (q @ cross_kv[i, 0].transpose(-1, -2)).float()  # [N, H, G*Tq, ctx], float32
            w = F.softmax(qk, dim=-1).to(q.dtype)
            wv = (w @ cross_kv[i, 1]).view(n_audio, n_head, group, tq, -1).permute(0, 2, 3, 1, 4)
            x = x + cross.out(wv.reshape(batch, tq, -1))
            qks.append(qk.view(n_audio, n_head, group, tq, -1))

            x = x + block.mlp(block.mlp_ln(x))
        x = self.ln(x)
        if self.logits_proj is not None:
            logits = self.logits_proj(x).float()
        else:
            logits = (x @ self.token_embedding.weight.to(x.dtype).t()).float()
        align = torch.stack([qks[l][:, h].reshape(batch, tq, -1) for l, h in self.alignment_heads], dim=1)
        return logits, align


# --------------------------------------------------------------------------- helpers used by tests / Rust mirror


def rust_style_log_mel(mel_module, audio: torch.Tensor, chunk_frames: int | None = None) -> torch.Tensor:
    """What the Rust side does: append 480000 zeros, reflect-pad 200 both ends, run mel.ts
    (optionally in chunks of ``chunk_frames`` frames), drop the last frame (openai drops it),
    then max(x, x.max() - 8) and (x + 4) / 4."""
    audio = audio.float().cpu()
    padded = torch.nn.functional.pad(audio, (0, N_SAMPLES))
    padded = torch.nn.functional.pad(padded[None, None], (N_FFT // 2, N_FFT // 2), mode="reflect")[0, 0]
    n_frames = 1 + (padded.numel() - N_FFT) // HOP
    if chunk_frames is None:
        raw = mel_module(padded).cpu()
    else:
        parts = []
        for f0 in range(0, n_frames, chunk_frames):
            f1 = min(n_frames, f0 + chunk_frames)
            parts.append(mel_module(padded[f0 * HOP:(f1 - 1) * HOP + N_FFT]).cpu())
        raw = torch.cat(parts, dim=1)
    assert raw.shape[1] == n_frames, (raw.shape, n_frames)
    raw = raw[:, :-1]
    raw = torch.maximum(raw, raw.max() - 8.0)
    return (raw + 4.0) / 4.0


def synthetic_audio(seconds: float = 2.0, seed: int = 0) -> np.ndarray:
    """A deterministic speech-like test signal (harmonic chirps with an envelope, plus noise)."""
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n, dtype=np.float64) / SAMPLE_RATE
    f0 = 140 + 40 * np.sin(2 * np.pi * 1.3 * t)
    phase = 2 * np.pi * np.cumsum(f0) / SAMPLE_RATE
    sig = sum(np.sin(k * phase) / k for k in range(1, 12))
    env = 0.5 * (1 + np.sin(2 * np.pi * 3.1 * t)) ** 2
    rng = np.random.default_rng(seed)
    sig = 0.1 * env * sig + 0.003 * rng.standard_normal(n)
    return sig.astype(np.float32)


def _default_audio(parity_audio: str | None) -> tuple[np.ndarray, str]:
    if parity_audio:
        return load_wav_16k_mono(parity_audio), str(parity_audio)
    for cand in sorted(Path("/usr/share/pocketsphinx/test/data/librivox").glob("*.wav")):
        return load_wav_16k_mono(cand), str(cand)
    return synthetic_audio(), "synthetic"


# --------------------------------------------------------------------------- export


def quantize_int8(model):
    """Dynamic int8 quantization of every Linear (weights int8 per output channel, activations
    quantized per call), as faster-whisper's ``compute_type="int8"`` does on the CPU; the
    output projection tied to the token embedding becomes a quantized Linear too."""
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    def plain(mod):
        for name, child in mod.named_children():
            if isinstance(child, nn.Linear):
                lin = nn.Linear(child.in_features, child.out_features, bias=child.bias is not None)
                lin.weight = child.weight
                lin.bias = child.bias
                setattr(mod, name, lin)
            else:
                plain(child)

    plain(model)
    emb = model.decoder.token_embedding.weight
    proj = nn.Linear(emb.shape[1], emb.shape[0], bias=False)
    proj.weight = nn.Parameter(emb.detach().clone())
    holder = nn.Module()
    holder.add_module("proj", proj)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization's deprecation notices
        spec = {nn.Linear: per_channel_dynamic_qconfig}  # one scale per output row: closer to float32
        model.encoder = quantize_dynamic(model.encoder, spec, dtype=torch.qint8)
        model.decoder = quantize_dynamic(model.decoder, spec, dtype=torch.qint8)
        model.quantized_logits = quantize_dynamic(holder, spec, dtype=torch.qint8).proj
    return model


def export_whisper(src, out_dir: str | Path, name: str, device: str = "cpu", dtype: str = "float32",
                   parity_ref: str | Path | None = None, parity_audio: str | None = None,
                   verify: bool = True, log=print, quantize: str | None = None) -> dict:
    """Export ``src`` (an importers.WhisperSource) into ``out_dir/name``; return measured parity figures."""
    quiet_warnings()
    if device not in ("cpu", "cuda"):
        raise ExportError(f"--device must be cpu or cuda, not {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ExportError("--device cuda: torch sees no CUDA device here")
    if dtype not in DTYPES:
        raise ExportError(f"--dtype must be float32 or float16, not {dtype!r}")
    if dtype == "float16" and device != "cuda":
        raise ExportError("--dtype float16 needs --device cuda (half precision on the CPU is slow and inexact)")
    if quantize not in (None, "int8"):
        raise ExportError(f"--quantize must be int8, not {quantize!r}")
    if quantize and (device != "cpu" or dtype != "float32"):
        raise ExportError("--quantize int8 is for CPU float32 exports (dynamic int8 runs on the CPU only)")
    with staged_folder(out_dir, name) as stage:
        return _export_into(src, stage, name, device, dtype, parity_ref, parity_audio, verify, log, quantize)


def _export_into(src, folder: Path, name, device, dtype, parity_ref, parity_audio, verify, log,
                 quantize=None) -> dict:
    whisper = _whisper()
    tdev, tdt = torch.device(device), DTYPES[dtype]
    dims, heads = src.dims, src.alignment_heads
    L, D, V, H = dims["n_text_layer"], dims["n_text_state"], dims["n_vocab"], dims["n_text_head"]
    t0 = time.time()

    ref_model = src.model.float().eval()  # float32 CPU reference, openai's own code
    model = _clone_model(ref_model).to(device=tdev, dtype=tdt).eval()
    for mod in model.modules():  # openai's LayerNorm computes in float32: keep its parameters float32
        if isinstance(mod, nn.LayerNorm):
            mod.float()
    if quantize == "int8":
        model = quantize_int8(model)

    with torch.no_grad():
        # ---- mel
        mel_mod = LogMel(dims["n_mels"], tdev).eval()
        ex = torch.randn(N_FFT + 37 * HOP + 11, generator=torch.Generator().manual_seed(1)).to(tdev)
        ck = torch.randn(N_FFT + 5 * HOP, generator=torch.Generator().manual_seed(2)).to(tdev)
        mel_ts = trace_and_save(mel_mod, (ex,), folder / "mel.ts", check_inputs=[(ck,)])

        # ---- encoder
        mel_ex = torch.randn(1, dims["n_mels"], N_FRAMES, generator=torch.Generator().manual_seed(3)).to(tdev)
        # The encoder's self-attention through torch's fused scaled_dot_product_attention, as
        # openai-whisper itself runs it by default (use_sdpa): no [H, 1500, 1500] score matrix
        # is materialised; 1.6x (tiny) to 2.1x (base) faster per window on the CPU. It has no
        # mask, so it traces (the decoder's causal path is what cannot).
        whisper.model.MultiHeadAttention.use_sdpa = True
        try:
            enc_ts = trace_and_save(Encoder(model, tdt), (mel_ex,), folder / "encoder.ts")
        finally:
            whisper.model.MultiHeadAttention.use_sdpa = False

        # ---- cross kv
        feats_ex = torch.randn(1, dims["n_audio_ctx"], dims["n_audio_state"], generator=torch.Generator().manual_seed(4))
        feats_ex = feats_ex.to(tdev, tdt)
        ckv_ts = trace_and_save(CrossKV(model, tdt), (feats_ex,), folder / "cross_kv.ts")

        # ---- decoder step: traced with a non-empty cache (T=3) and explicit positions
        g = torch.Generator().manual_seed(5)
        def step_inputs(b, t, tq, n):
            return (torch.randint(0, V, (b, tq), generator=g).to(tdev),
                    torch.arange(t, t + tq, dtype=torch.long, device=tdev),
                    torch.randn(L, 2, n, H, dims["n_audio_ctx"], D // H, generator=g).to(tdev, tdt),
                    torch.randn(L, 2, b, t + tq + 3, D, generator=g).to(tdev, tdt),
                    torch.zeros(t, device=tdev))
        # B = 4 rows on N = 2 audios, so neither the group nor the audio count is frozen at 1
        step_ts = trace_and_save(DecoderStep(model, heads, tdt), step_inputs(4, 3, 2, 2), folder / "decoder_step.ts",
                                 check_inputs=[step_inputs(1, 0, 1, 1), step_inputs(3, 5, 4, 3),
                                               step_inputs(5, 2, 1, 1), step_inputs(6, 1, 3, 2)])

    # ---- tokenizer asset
    multilingual = V >= 51865
    tok_name = "multilingual" if multilingual else "gpt2"
    assets = Path(whisper.__file__).parent / "assets"
    atomic_copy(assets / f"{tok_name}.tiktoken", folder / f"{tok_name}.tiktoken")
    export_s = time.time() - t0

    report: dict = {"name": name, "export_s": round(export_s, 2)}
    if verify:
        report.update(verify_export(ref_model, src, mel_ts, enc_ts, ckv_ts, step_ts, tdev, tdt, parity_audio, log=log,
                                    quantized=bool(quantize)))
    if parity_ref:
        write_whisper_parity_ref(ref_model, src, parity_ref, parity_audio)
        report["parity_ref"] = str(parity_ref)

    num_languages = V - 51765 - int(multilingual)
    write_manifest(
        folder, "whisper", name, src.variant, device, dtype, bool(getattr(src, "random_init", False)), src.source,
        files={
            "mel": ("mel.ts", "torchscript"),
            "encoder": ("encoder.ts", "torchscript"),
            "cross_kv": ("cross_kv.ts", "torchscript"),
            "decoder_step": ("decoder_step.ts", "torchscript"),
            "tokenizer": (f"{tok_name}.tiktoken", "asset"),
        },
        dims={**{k: int(v) for k, v in dims.items()}, "n_alignment_heads": len(heads)},
        config={
            "alignment-heads": [list(h) for h in heads],
            "multilingual": multilingual,
            "num-languages": num_languages,
            "tokenizer": tok_name,
            "export-version": EXPORT_VERSION,
            "quantize": quantize or "none",
        },
    )
    report["total_s"] = round(time.time() - t0, 2)
    return report


def _clone_model(model):
    import copy

    return copy.deepcopy(model)


# --------------------------------------------------------------------------- verification


def verify_export(ref_model, src, mel_ts, enc_ts, ckv_ts, step_ts, tdev, tdt, parity_audio=None, log=print,
                  quantized: bool = False) -> dict:
    """Compare the saved/loaded TorchScript modules with openai-whisper's own float32 model."""
    whisper = _whisper()
    dims = src.dims
    n_mels, L, D = dims["n_mels"], dims["n_text_layer"], dims["n_text_state"]
    res: dict = {}
    audio_np, audio_name = _default_audio(parity_audio)
    audio = torch.from_numpy(audio_np)
    half = tdt == torch.float16
    with torch.no_grad():
        # mel: Rust recipe (whole and chunked) vs openai's log_mel_spectrogram(padding=480000)
        ref = whisper.log_mel_spectrogram(audio, n_mels, padding=N_SAMPLES)
        ours = rust_style_log_mel(mel_ts, audio)
        ours_chunked = rust_style_log_mel(mel_ts, audio, chunk_frames=1000)
        if ours.shape != ref.shape:
            raise ExportError(f"mel.ts: Rust recipe gives shape {tuple(ours.shape)}, openai {tuple(ref.shape)}")
        res["mel_max_abs_diff"] = float((ours - ref).abs().max())
        res["mel_chunked_max_abs_diff"] = float((ours_chunked - ref).abs().max())
        for n in (400, 401, 400 + 160 * 7 + 3, 16000 * 3 + 17):  # other lengths work
            x = torch.randn(n)
            out = mel_ts(x.to(tdev)).cpu()
            want = 1 + (n - N_FFT) // HOP
            if tuple(out.shape) != (n_mels, want):
                raise ExportError(f"mel.ts: length {n} gave {tuple(out.shape)}, expected ({n_mels}, {want})")
        log(f"  mel ({audio_name}, {audio.numel()} samples): max |diff| vs openai = {res['mel_max_abs_diff']:.3g}"
            f" (chunked {res['mel_chunked_max_abs_diff']:.3g})")

        # encoder, B = 1 real + B = 2
        mel3000 = whisper.pad_or_trim(ref, N_FRAMES)
        mel_b = torch.stack([mel3000, torch.roll(mel3000, 700, dims=1) * 0.9])
        feats_ref = ref_model.encoder(mel_b)
        feats = enc_ts(mel_b.to(tdev)).float().cpu()
        res["encoder_max_abs_diff"] = float((feats - feats_ref).abs().max())
        f1 = enc_ts(mel_b[:1].to(tdev)).float().cpu()
        res["encoder_b1_max_abs_diff"] = float((f1 - feats_ref[:1]).abs().max())
        log(f"  encoder: max |diff| = {res['encoder_max_abs_diff']:.3g} (B=2), {res['encoder_b1_max_abs_diff']:.3g} (B=1)")

        # decoder from an EMPTY cache, one token at a time, B = 1, 2, 5
        multilingual = dims["n_vocab"] >= 51865
        tok = whisper.tokenizer.get_tokenizer(multilingual, num_languages=dims["n_vocab"] - 51765 - int(multilingual),
                                              language="en" if multilingual else None, task="transcribe" if multilingual else None)
        prompt = list(tok.sot_sequence_including_notimestamps)
        text = tok.encode(" he was not an ill disposed young man, unless to be rather cold hearted and rather"
                          " selfish is to be ill disposed")
        for B in (1, 2, 5):
            rows = []
            for b in range(B):
                rows.append(prompt + text[b: b + 12])
            tokens = torch.tensor(rows, dtype=torch.long)
            S = tokens.shape[1]
            fb = torch.cat([feats_ref] * 3)[:B] if B > 1 else feats_ref[:1]
            if B > 2:
                fb = fb + 0.01 * torch.randn(fb.shape, generator=torch.Generator().manual_seed(B))
            # openai reference: whole sequence at once, with cross-attention qk captured
            qk_cap = {}
            hooks = [blk.cross_attn.register_forward_hook(
                lambda m, i, o, li=li: qk_cap.__setitem__(li, o[1])) for li, blk in enumerate(ref_model.decoder.blocks)]
            try:
                logits_ref = ref_model.decoder(tokens, fb)
            finally:
                for hk in hooks:
                    hk.remove()
            align_ref = torch.stack([qk_cap[l][:, h] for l, h in src.alignment_heads], dim=1)  # [B, A, S, 1500]

            ckv = ckv_ts(fb.to(tdev, tdt))
            H = dims["n_text_head"]
            if tuple(ckv.shape) != (L, 2, B, H, dims["n_audio_ctx"], D // H):
                raise ExportError(f"cross_kv.ts: shape {tuple(ckv.shape)}")
            C = dims["n_text_ctx"]
            cache = torch.zeros(L, 2, B, C, D, device=tdev, dtype=tdt)
            dl, da = 0.0, 0.0
            for t in range(S):
                lg, aq = step_ts(tokens[:, t:t + 1].to(tdev), torch.tensor([t], device=tdev), ckv, cache,
                                 torch.zeros(t, device=tdev))
                lg, aq = lg[:, 0], aq[:, :, 0]
                if lg.dtype != torch.float32 or aq.dtype != torch.float32:
                    raise ExportError("decoder_step.ts: logits/align_qk must be float32")
                dl = max(dl, float((lg.cpu() - logits_ref[:, t]).abs().max()))
                da = max(da, float((aq.cpu() - align_ref[:, :, t]).abs().max()))
            # The whole sequence in one call (prompt prefill), then in two halves.
            half_s = S // 2
            buf = torch.zeros(L, 2, B, C, D, device=tdev, dtype=tdt)
            lg_all, aq_all = step_ts(tokens.to(tdev), torch.arange(S, device=tdev), ckv, buf, torch.zeros(0, device=tdev))
            # (int8 exports quantize activations per call, so a prefill's keys differ a little
            # from one step's; only where they are written is checked there)
            slot_diff = float((buf[:, :, :, :S] - cache[:, :, :, :S]).abs().max())
            if (slot_diff > 1e-4 and not quantized) or bool(buf[:, :, :, S:].any()) or not bool(buf[:, :, :, :S].any()):
                raise ExportError(f"decoder_step.ts: the prefill wrote other cache slots than the steps did ({slot_diff:.3g})")
            buf.zero_()
            step_ts(tokens[:, :half_s].to(tdev), torch.arange(half_s, device=tdev), ckv, buf, torch.zeros(0, device=tdev))
            lg_2, _ = step_ts(tokens[:, half_s:].to(tdev), torch.arange(half_s, S, device=tdev), ckv, buf,
                              torch.zeros(half_s, device=tdev))
            dp = max(float((lg_all.cpu() - logits_ref).abs().max()),
                     float((lg_2.cpu() - logits_ref[:, half_s:]).abs().max()))
            dpa = float((aq_all.cpu() - align_ref).abs().max())
            res[f"decoder_B{B}_prefill_logits_max_abs_diff"] = dp
            log(f"  decoder_step B={B}, prefill of {S} tokens: logits max |diff| = {dp:.3g}, align_qk {dpa:.3g}")
            amax = float(logits_ref.abs().max())
            res[f"decoder_B{B}_logits_max_abs_diff"] = dl
            res[f"decoder_B{B}_align_qk_max_abs_diff"] = da
            log(f"  decoder_step B={B}, {S} steps from T=0: logits max |diff| = {dl:.3g} (|logits| <= {amax:.1f}),"
                f" align_qk max |diff| = {da:.3g}")
            # the positions that predict text (the prompt's own positions are never sampled)
            p0 = len(prompt) - 1
            agree = float((lg_all.cpu()[:, p0:].argmax(-1) == logits_ref[:, p0:].argmax(-1)).float().mean())
            res[f"decoder_B{B}_top1_agreement"] = agree
            if quantized:
                # int8 weights change the logits by design. This teacher-forced text is not what
                # the audio says, so the agreement is only reported; the quality check is the
                # WER on real speech (tests/whisper_e2e.rs, tools/bench/whisper_bench.py).
                log(f"  decoder_step B={B} (int8): top-1 token agrees with openai float32 on {agree:.1%}"
                    f" of the text positions (teacher-forced, unrelated text)")
                continue
            tol = 0.5 if half else 2e-2
            if max(dl, dp) > tol:
                raise ExportError(f"decoder_step.ts: logits differ from openai's by {dl:.3g} (B={B}); export is wrong")
        # five rows (beams) sharing one audio's cross K/V vs openai with the audio repeated
        rows = torch.tensor([prompt + text[b: b + 12] for b in range(5)], dtype=torch.long)
        logits_ref = ref_model.decoder(rows, feats_ref[:1].expand(5, -1, -1))
        ckv1 = ckv_ts(feats_ref[:1].to(tdev, tdt))
        lg, _ = step_ts(rows.to(tdev), torch.arange(rows.shape[1], device=tdev), ckv1,
                        torch.zeros(L, 2, 5, dims["n_text_ctx"], D, device=tdev, dtype=tdt), torch.zeros(0, device=tdev))
        res["decoder_shared_audio_logits_max_abs_diff"] = ds = float((lg.cpu() - logits_ref).abs().max())
        log(f"  decoder_step, 5 rows on one audio: logits max |diff| = {ds:.3g}")
        if not quantized and ds > (0.5 if half else 2e-2):
            raise ExportError(f"decoder_step.ts: rows sharing an audio differ from openai's by {ds:.3g}")
        if res["mel_max_abs_diff"] > 1e-3:
            raise ExportError(f"mel.ts: differs from openai's log_mel_spectrogram by {res['mel_max_abs_diff']:.3g}")
        enc_tol = 0.5 if half else (float("inf") if quantized else 2e-2)
        if res["encoder_max_abs_diff"] > enc_tol:
            raise ExportError(f"encoder.ts: differs from openai's encoder by {res['encoder_max_abs_diff']:.3g}")
    return res


# --------------------------------------------------------------------------- parity reference for Rust tests


def write_whisper_parity_ref(ref_model, src, path, parity_audio=None, seconds: float = 2.0, steps: int = 8) -> Path:
    """audio (<= 2 s), mel (openai log_mel_spectrogram, padding 480000, trimmed to 3000 frames),
    encoder_out, prompt, greedy tokens (raw argmax, no suppression) and their step logits."""
    whisper = _whisper()
    dims = src.dims
    audio_np, audio_name = _default_audio(parity_audio)
    audio = torch.from_numpy(audio_np[: int(seconds * SAMPLE_RATE)].copy())
    multilingual = dims["n_vocab"] >= 51865
    tok = whisper.tokenizer.get_tokenizer(multilingual, num_languages=dims["n_vocab"] - 51765 - int(multilingual),
                                          language="en" if multilingual else None, task="transcribe" if multilingual else None)
    prompt = list(tok.sot_sequence_including_notimestamps)
    with torch.no_grad():
        mel_full = whisper.log_mel_spectrogram(audio, dims["n_mels"], padding=N_SAMPLES)
        mel = whisper.pad_or_trim(mel_full, N_FRAMES)
        feats = ref_model.encoder(mel[None])
        seq = list(prompt)
        step_logits = []
        for _ in range(steps):
            lg = ref_model.decoder(torch.tensor([seq]), feats)[0, -1]
            step_logits.append(lg)
            nxt = int(lg.argmax())
            seq.append(nxt)
            if nxt == tok.eot:
                break
    gen = seq[len(prompt):]
    return write_parity_reference(path, {
        "audio": audio,
        "mel": mel,
        "encoder_out": feats,
        "prompt": torch.tensor(prompt, dtype=torch.long),
        "tokens": torch.tensor(gen, dtype=torch.long),
        "logits": torch.stack(step_logits),
    }, metadata={"audio": audio_name, "text": tok.decode([t for t in gen if t < tok.eot]),
                 "greedy": "raw argmax of openai logits, no token suppression",
                 "mel": "whisper.log_mel_spectrogram(audio, n_mels, padding=480000), first 3000 frames"})
