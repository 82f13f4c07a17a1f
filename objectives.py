"""The objectives by config.py's name (--objective), each on diffusion.Objective's contract: the
entry scripts find a config's objective here and call its methods, never asking which it is. And
a config as its objective runs it (effective), and the network it trains (model_args).

    python -c "from objectives import OBJECTIVES; print(OBJECTIVES['bd3'].describe.__doc__)"
"""
from dataclasses import fields, replace

from ar import AutoRegressive
from bd3 import BlockDiffusion
from config import SAMPLED, Config
from diffusion import MaskedDiffusion, SamplerOptions
from model import ModelArgs
from uniform import UniformDiffusion

OBJECTIVES = dict(mdlm=MaskedDiffusion(), uniform=UniformDiffusion(), ar=AutoRegressive(), bd3=BlockDiffusion())

# Their type, for the one annotation that holds a run's objective (train.py's Run): an editor's
# go-to-definition from a call on it lands on each objective's method, not only on the contract's.
AnyObjective = MaskedDiffusion | UniformDiffusion | AutoRegressive | BlockDiffusion

SAMPLED_KEYS = (*SAMPLED, *SamplerOptions.keys())  # the keys inference.py takes from its command line


def effective(cfg, given=()):
    """cfg as its objective runs it: IGNORES at their defaults, MODEL's keys at its values, its
    SAMPLER_DEFAULTS where no one gave the key, so another objective's preset values reach no log
    or checkpoint. given: the keys the user set."""
    if cfg.objective not in OBJECTIVES:  # no objective to run it: validation names the known ones
        return cfg
    obj, keys = OBJECTIVES[cfg.objective], {f.name for f in fields(Config)}
    unread = {k: getattr(Config, k) for k in obj.IGNORES}
    unread.update({k: v for k, v in obj.SAMPLER_DEFAULTS.items() if k not in given})
    fixed = {k: v for k, v in obj.MODEL.items() if k in keys}  # MODEL also names ModelArgs' own fields (causal)
    cooled = {}
    fall_unread = "temperature_end_share" in {*obj.IGNORES, *obj.unread(cfg, SamplerOptions.from_config(cfg))}
    if fall_unread and cfg.temperature_end_share != 1.0 and not {"temperature", "temperature_end_share"} & set(given):
        # a preset's temperature falls from a hot start: where the fall is unread, so is its start
        cooled = dict(temperature=Config.temperature, temperature_end_share=1.0)
    return replace(cfg, **{**unread, **fixed, **cooled})  # a key unread and fixed (bd3's time_cond) is fixed


def model_args(cfg, vocab_size):
    """The network a config trains: its dimensions, and what its objective fixes."""
    return ModelArgs.from_config(cfg, vocab_size, **OBJECTIVES[cfg.objective].MODEL)
