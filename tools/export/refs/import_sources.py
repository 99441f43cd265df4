"""Import sources for tests/model_import.rs, from random weights of the real architectures
(the layouts users have on disk), small enough for a test.

    import_sources.py whisper-hf DIR   a transformers WhisperForConditionalGeneration folder
                                       (narrow: 2 layers of width 64, openai's vocabulary)
    import_sources.py sd DIR           a diffusers pipeline folder (tools/export/sd_configs tiny-sd15)
    import_sources.py controlnet DIR   a diffusers ControlNet folder for tiny-sd15
    import_sources.py lora FILE        a Kohya-layout LoRA .safetensors (two UNet modules)
"""
import os
import sys
import warnings
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
warnings.filterwarnings("ignore")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT.parent))


def whisper_hf(out: str):
    import torch
    from transformers import WhisperConfig, WhisperForConditionalGeneration

    torch.manual_seed(0)
    cfg = WhisperConfig(vocab_size=51864, num_mel_bins=80, d_model=64, encoder_layers=2, decoder_layers=2,
                        encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=256,
                        decoder_ffn_dim=256, max_source_positions=1500, max_target_positions=448)
    WhisperForConditionalGeneration(cfg).eval().save_pretrained(out, safe_serialization=True)


def lora(out: str):
    import torch
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(0)
    t = {}
    for m in ("lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_q",
              "lora_unet_down_blocks_0_attentions_0_transformer_blocks_0_attn1_to_k"):
        t[f"{m}.lora_down.weight"] = torch.randn(4, 32, generator=g)
        t[f"{m}.lora_up.weight"] = torch.randn(32, 4, generator=g)
        t[f"{m}.alpha"] = torch.tensor(4.0)
    save_file(t, out)


def main(mode: str, out: str) -> None:
    from tools.export import sd_configs

    if mode == "whisper-hf":
        whisper_hf(out)
    elif mode == "sd":
        sd_configs.build_pipeline("tiny-sd15", 0).save_pretrained(out, safe_serialization=True)
    elif mode == "controlnet":
        sd_configs.build_controlnet("tiny-sd15", 0).save_pretrained(out, safe_serialization=True)
    elif mode == "lora":
        lora(out)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(*sys.argv[1:3])
