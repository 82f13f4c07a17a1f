"""The objectives, by name: every entry script gets its objective here, once, and calls the same few functions.

Each module tells its own whole story (forward noise, loss and bound, reverse sampler: mdlm's and bd3's blocks share
sampler.py's, below them both; common.py below all) and offers the names below; what it leaves out takes DEFAULTS
(masked diffusion's answer):

    MODEL           the ModelArgs it fixes itself (causal attention, no time input, no self-conditioning)
    WINDOW          tokens a training window needs beyond block_size (AR: 1, it scores the last L of L + 1)
    IGNORES         {config key it does not read: why}; configurator.validate refuses them when given, and effective()
                    sets the ones a preset gave back to their defaults: what a config holds is what runs
    CONTINUES_ONLY  its samples only continue a prompt (no infill blanks, no suffix)
    ANY_LENGTH      its sampler writes past the model's context
    NOISE_START     its reverse process starts from random tokens, not [MASK]
    EXACT           its score is the exact NLL, not a bound
    TRACE           it has a denoising trace (MP4/GIF, --live)
    STEP_CHAIN      its K-step sampler walks the schedule's time grid (so the bound of that chain is defined)
    BLOCKS          it decodes block by block, bd3_block tokens at a time (a trace's header and eval.py name L')
    SEMI_AR         its sampler can decode in semi-autoregressive blocks past the context (--semi_ar_length)
    LOSS_KEY        the config key that picks its training loss (what the log names it by)
    check(cfg, given)                                    refuse values that cannot apply (given: the keys the user set)
    draws(x, cfg, schedule, tok, draw)                   the random draws of one micro-batch's loss (common.Drawn, None:
                                                         none), made eagerly from its keyed generator (common.Draw)
    loss_of(model, x, cfg, schedule, tok, drawn)         that training loss given them: a pure function of the model,
                                                         x and drawn's tensors (no generator, no Python value that
                                                         changes from step to step, fixed shapes), which train.py
                                                         compiles with the model (utils.dist.compile_step)
    loss(model, x, cfg, schedule, tok, draw)             the two composed: the training loss of one micro-batch
                                                         (get() composes it: no module writes it)
    eval_times(cfg, L)                                   independent times per window for the bound (0: exact)
    bound(model, x, cfg, schedule, tok, t, generator)    per-window nats/token (B,), and what evaluation reads
    flops(model, cfg)                                    (training FLOPs per window token, columns per pass)
    sample(model, x, gen_mask, cfg, schedule, mask_id, generator, on_step)   fill the canvas: (tokens, stats)
    passes(cfg, n_gen, n_prompt)                         forward passes per sample (None: adaptive)
    ar_nll(model, windows, cfg, mask_id)                 its AR mode's exact NLL per window (B,), None if it has none
    describe(cfg)                                        the sampler settings in force, in one line
    unread(cfg)                                          the sampler keys cfg's own switches leave unread (under
                                                         --dual_sample or --bd3_speculate the diffusion sampler's):
                                                         check() refuses them given, frontier.py drops them

A fifth objective is one new module, its name in config.py's objective choices and one line below
(tests/test_objectives.py registers a toy one). The table names each module and get() imports the one asked for, so
importing this file loads no objective.

    python -c "import objectives; print(list(objectives.OBJECTIVES))"
"""
import importlib
from functools import partial
from dataclasses import fields, replace
from types import SimpleNamespace

from config import CHOICES, Config
from model import ModelArgs
from utils.errors import UserError

# name (config.py's choices) -> the module that tells its story
OBJECTIVES = dict(zip(CHOICES["objective"], ("diffusion", "uniform", "ar", "bd3"), strict=True))
DEFAULTS = dict(MODEL=dict(clean_causal=False), WINDOW=0, IGNORES={}, CONTINUES_ONLY=False, ANY_LENGTH=False,
                NOISE_START=False, EXACT=False, TRACE=True, STEP_CHAIN=False, BLOCKS=False, SEMI_AR=False,
                LOSS_KEY="loss_type", check=lambda cfg, given=(): None, eval_times=lambda cfg, L: 1,
                flops=lambda model, cfg: (model.flops_per_token(), cfg.block_size),
                ar_nll=lambda model, windows, cfg, mask_id: None, unread=lambda cfg: ())
INTERFACE = (*DEFAULTS, "draws", "loss_of", "bound", "sample", "passes", "describe")


def get(name):
    """The objective called `name`: its module's interface, DEFAULTS for what the module leaves out."""
    if name not in OBJECTIVES:
        raise UserError(f"objective={name!r} is not one of {', '.join(OBJECTIVES)}")
    module = importlib.import_module(OBJECTIVES[name])
    obj = SimpleNamespace(**{**DEFAULTS, **{k: getattr(module, k) for k in INTERFACE if hasattr(module, k)}})
    obj.loss = partial(composed_loss, obj)
    return obj


def composed_loss(obj, model, x, cfg, schedule, tok, draw):
    """An objective's loss(): its draws, then its loss given them, in one call (train.py's step makes the two calls
    itself, so that only the second is compiled)."""
    return obj.loss_of(model, x, cfg, schedule, tok, obj.draws(x, cfg, schedule, tok, draw))


def model_args(cfg, vocab_size):
    """The network a config trains: its own dimensions, and what its objective fixes (causal, no time input)."""
    return ModelArgs.from_config(cfg, vocab_size, **get(cfg.objective).MODEL)


def effective(cfg, given=()):
    """cfg as its objective runs it: the keys it does not read (IGNORES) at their defaults, the model keys it fixes
    itself (MODEL: time_cond, self_cond) at its values. A preset's value for another objective's key then never
    reaches a log line, a checkpoint's config or a branch that asks `if cfg.key`. given: the keys the user set."""
    obj, keys = get(cfg.objective), {f.name for f in fields(Config)}
    unread = {k: getattr(Config, k) for k in obj.IGNORES}
    fixed = {k: v for k, v in obj.MODEL.items() if k in keys}  # MODEL also names ModelArgs' own fields (causal)
    cooled = {}
    fall_unread = "temperature_end_share" in {*obj.IGNORES, *obj.unread(cfg)}
    if fall_unread and cfg.temperature_end_share != 1.0 and not {"temperature", "temperature_end_share"} & set(given):
        # a preset's temperature falls from a hot start: where the fall is unread, so is its start
        cooled = dict(temperature=Config.temperature, temperature_end_share=1.0)
    return replace(cfg, **{**unread, **fixed, **cooled})  # a key unread and fixed (bd3's time_cond) is fixed
