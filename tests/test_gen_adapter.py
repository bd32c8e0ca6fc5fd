"""The base of the diffusers adapters: a new generator declares only what differs (its name, text encoders,
defaults, options) and gets the shared construction (components, scheduler-config fallback, size check, frozen
encoders and VAE, LoRA) and a constructor signature the config validator reads."""

import inspect

import pytest
import torch

from tiny_models import tiny_flux_components
from vipo.config import ConfigError, load
from vipo.generators import GENERATORS, Generator
from vipo.generators.adapter import DiffusersGenerator
from vipo.generators.flux import FluxGenerator
from vipo.generators.sd3 import SD3Generator
from vipo.generators.wan import WanGenerator


class OneEncoderFlux(DiffusersGenerator, Generator):
    """A made-up adapter: the FLUX transformer and VAE with one text encoder, declared by its differences only
    (construction is what is tested here; the interface methods are the least that instantiates)."""

    MODEL, TEXT_ENCODERS, LORA_TARGETS = "One", ("CLIP",), ("to_q", "to_v")
    SCHEDULER_CONFIG = dict(num_train_timesteps=1000, shift=2.0)
    DEFAULTS = dict(height=64, width=96)

    def _configure(self, parts, *, guidance_scale: float = 2.5, flavour: str = "plain"):
        self.guidance_scale, self.flavour = guidance_scale, flavour

    def latent_shape(self):
        return (16, self.height // self.vae_scale, self.width // self.vae_scale)

    def _encode(self, prompts):
        return {"n": torch.zeros(len(prompts), 1)}

    def velocity(self, latents, sigma, cond):
        return torch.zeros_like(latents)

    def decode(self, latents):
        return torch.zeros(latents.shape[0], 3, self.height, self.width)

    def sigmas(self, num_steps):
        return torch.linspace(1, 0, num_steps + 1)


def _one(**options):
    c = tiny_flux_components()
    return OneEncoderFlux.from_components(c["transformer"], c["vae"], [c["text_encoder"]], [c["tokenizer"]],
                                          lora_rank=2, **options)


def test_a_new_adapter_gets_the_shared_construction():
    g = _one()
    assert (g.height, g.width, g.vae_scale) == (64, 96, 8)  # its DEFAULTS; the tiny VAE downsamples by 8
    assert g.max_sequence_length == 512  # the base default it did not override
    assert g.scheduler_config == OneEncoderFlux.SCHEDULER_CONFIG  # no checkpoint, none given: its fallback
    assert _one(scheduler_config={"shift": 7.0}).scheduler_config == {"shift": 7.0}
    assert (g.guidance_scale, g.flavour) == (2.5, "plain") and _one(flavour="x").flavour == "x"
    trainable = {n for n, p in g.transformer.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)  # LoRA on LORA_TARGETS only
    assert {n.split(".lora_")[0].rsplit(".", 1)[-1] for n in trainable} == {"to_q", "to_v"}
    assert not any(p.requires_grad for m in [g.vae, *g.text_encoders] for p in m.parameters())
    assert g.encode_prompts(["a", "b"])["n"].shape == (2, 1)  # the prompt cache is attached
    with pytest.raises(ValueError, match="One height/width must be multiples of 16, got 64x100"):
        _one(width=100)
    c = tiny_flux_components()
    with pytest.raises(ValueError, match=r"needs 1 text encoder\(s\) and tokenizer\(s\): \[CLIP\], got 2 and 1"):
        OneEncoderFlux.from_components(c["transformer"], c["vae"], [c["text_encoder"]] * 2, [c["tokenizer"]])
    with pytest.raises(ValueError, match="missing: vae"):
        OneEncoderFlux(transformer=c["transformer"], text_encoders=[c["text_encoder"]], tokenizers=[c["tokenizer"]])


def test_the_signature_is_the_shared_options_then_the_adapters_own():
    params = inspect.signature(OneEncoderFlux).parameters
    shared = [k for k in inspect.signature(DiffusersGenerator.__init__).parameters if k not in ("self", "options")]
    assert list(params) == [*shared, "guidance_scale", "flavour"]
    assert params["height"].default == 64 and params["width"].default == 96 and params["lora_rank"].default == 64
    assert params["flavour"].default == "plain" and params["flavour"].kind is inspect.Parameter.KEYWORD_ONLY
    # the built-in adapters: their own defaults and options
    flux, sd3, wan = (inspect.signature(c).parameters for c in (FluxGenerator, SD3Generator, WanGenerator))
    assert (flux["height"].default, flux["lora_rank"].default, flux["guidance_scale"].default) == (512, 32, 3.5)
    assert sd3["max_sequence_length"].default == 256 and "negative_prompt" in sd3 and "negative_prompt" not in flux
    assert (wan["height"].default, wan["width"].default) == (480, 832) and "transformer_2" in wan
    assert "num_frames" in wan and "num_frames" not in flux


def test_the_config_validator_reads_a_new_adapters_options(monkeypatch):
    monkeypatch.setitem(GENERATORS._items, "one_encoder_flux", OneEncoderFlux)
    cfg, _ = load(["generator=toy", "~generator.weights", "generator.name=one_encoder_flux", "+generator.flavour=x"])
    assert cfg.generator.name == "one_encoder_flux" and cfg.generator.kwargs["flavour"] == "x"
    with pytest.raises(ConfigError, match="unknown key 'generator.flavor' .*did you mean 'flavour'"):
        load(["generator=toy", "~generator.weights", "generator.name=one_encoder_flux", "+generator.flavor=x"])
