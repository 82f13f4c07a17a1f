"""The objectives by name: an entry script gets its objective here, once, and calls these names on
it. Each module tells its own story; what it leaves out takes DEFAULTS:

    MODEL           the ModelArgs it fixes (causal, no time input, no self-conditioning)
    WINDOW          tokens a training window needs beyond block_size (AR: 1)
    IGNORES         {config key it does not read: why}: refused given, reset by effective()
    CONTINUES_ONLY  its samples only continue a prompt
    ANY_LENGTH      its sampler writes past the model's context
    NOISE_START     its reverse process starts from random tokens, not [MASK]
    EXACT           its score is the exact NLL, not a bound
    TRACE           it has a denoising trace (MP4/GIF, --live)
    STEP_CHAIN      its K-step sampler walks the schedule's time grid (the chain's bound exists)
    BLOCKS          it decodes bd3_block tokens at a time
    SEMI_AR         its sampler can decode semi-autoregressive blocks (--semi_ar_length)
    LOSS_KEY        the config key that picks its training loss
    check(cfg, given)                       refuse values that cannot apply (given: the user's keys)
    draws(x, cfg, schedule, tok, draw)      one micro-batch's random draws (common.Drawn), eager
    loss_of(model, x, cfg, schedule, tok, drawn)    the loss given them, pure: train.py compiles it
    eval_times(cfg, L)                      times per window for the bound (0: exact)
    bound(model, x, cfg, schedule, tok, t, generator)    per-window nats/token (B,)
    flops(model, cfg)                       (training FLOPs per window token, columns per pass)
    sample(model, x, gen_mask, cfg, schedule, mask_id, generator, on_step)    (tokens, stats)
    passes(cfg, n_gen, n_prompt)            forward passes per sample (None: adaptive)
    decodes(cfg, batch)                     its sampler runs compile_decode's cached step or pass
    ar_nll(model, windows, cfg, mask_id)    its AR mode's exact NLL per window (B,), or None
    describe(cfg)                           the sampler settings in force, in one line
    unread(cfg)                             sampler keys cfg's switches leave unread: refused given

A fifth objective is one module, its name among config.py's choices and one line below
(tests/test_objectives.py registers a toy one). get() imports only the module asked for.

    python -c "import objectives; print(list(objectives.OBJECTIVES))"
"""
import importlib
from dataclasses import fields, replace
from types import SimpleNamespace

from config import CHOICES, Config
from model import ModelArgs
from utils.errors import UserError

OBJECTIVES = dict(zip(CHOICES["objective"], ("diffusion", "uniform", "ar", "bd3"), strict=True))
DEFAULTS = dict(MODEL=dict(clean_causal=False), WINDOW=0, IGNORES={}, CONTINUES_ONLY=False, ANY_LENGTH=False,
                NOISE_START=False, EXACT=False, TRACE=True, STEP_CHAIN=False, BLOCKS=False, SEMI_AR=False,
                LOSS_KEY="loss_type", check=lambda cfg, given=(): None, eval_times=lambda cfg, L: 1,
                flops=lambda model, cfg: (model.flops_per_token(), cfg.block_size),
                ar_nll=lambda model, windows, cfg, mask_id: None, unread=lambda cfg: (),
                decodes=lambda cfg, batch: False)
INTERFACE = (*DEFAULTS, "draws", "loss_of", "bound", "sample", "passes", "describe")


def get(name):
    """The objective called `name`: its module's interface, DEFAULTS for the rest."""
    if name not in OBJECTIVES:
        raise UserError(f"objective={name!r} is not one of {', '.join(OBJECTIVES)}")
    module = importlib.import_module(OBJECTIVES[name])
    return SimpleNamespace(**{**DEFAULTS, **{k: getattr(module, k) for k in INTERFACE if hasattr(module, k)}})


def model_args(cfg, vocab_size):
    """The network a config trains: its dimensions, and what its objective fixes."""
    return ModelArgs.from_config(cfg, vocab_size, **get(cfg.objective).MODEL)


def effective(cfg, given=()):
    """cfg as its objective runs it: IGNORES at their defaults, MODEL's keys at its values, so
    another objective's preset values reach no log or checkpoint. given: the keys the user set."""
    obj, keys = get(cfg.objective), {f.name for f in fields(Config)}
    unread = {k: getattr(Config, k) for k in obj.IGNORES}
    fixed = {k: v for k, v in obj.MODEL.items() if k in keys}  # MODEL also names ModelArgs' own fields (causal)
    cooled = {}
    fall_unread = "temperature_end_share" in {*obj.IGNORES, *obj.unread(cfg)}
    if fall_unread and cfg.temperature_end_share != 1.0 and not {"temperature", "temperature_end_share"} & set(given):
        # a preset's temperature falls from a hot start: where the fall is unread, so is its start
        cooled = dict(temperature=Config.temperature, temperature_end_share=1.0)
    return replace(cfg, **{**unread, **fixed, **cooled})  # a key unread and fixed (bd3's time_cond) is fixed
