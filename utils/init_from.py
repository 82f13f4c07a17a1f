"""--init_from: start a new run (new optimizer, step 0, the LR schedule restarted) from another checkpoint's weights
and its tokenizer, so the data is encoded as the source's was.

    python train.py baby --objective=ar --max_iters=1000 --out_dir=artifacts/models/baby_ar_1k
    python train.py baby --init_from=artifacts/models/baby_ar_1k/model.pt --out_dir=artifacts/models/baby_ar2mdlm

The same weights, put to another use: AR -> mdlm (causal attention becomes bidirectional), AR -> bd3, mdlm -> bd3, or
any objective to itself (fine-tuning). A time embedding the source lacks starts at zero and an adaLN as the identity
with open gates, so the converted model first computes what the source did; an input the target lacks is dropped.
Other widths, depths, heads, tying, tokenizers or a learned time embedding of another T are refused.
"""
from dataclasses import fields

import torch
import torch.nn as nn

from model import ModelArgs
from utils.checkpoint import read_checkpoint, weights
from utils.errors import UserError
from utils.tokenizer import fingerprint, tokenizer_from_state

SHAPE_KEYS = ("n_layer", "n_head", "n_embd", "vocab_size", "tie_weights")  # must match; block_size may differ (RoPE)
INPUT_PREFIXES = ("time_emb.", "adaln.", "sc_proj.")  # the time and self-conditioning inputs: either side may lack them
CONVERSIONS = {("ar", "mdlm"), ("ar", "bd3"), ("mdlm", "bd3")}  # source -> target objective, besides X -> X


def source_tokenizer(path, kind, objective, ckpt=None):
    """The source's tokenizer, for the new run's data; the run's kind and objective are checked against the source's
    before any data is read. ckpt: the source when already read (else path is read)."""
    ckpt = read_checkpoint(path) if ckpt is None else ckpt
    check_conversion(ckpt.get("config", {}).get("objective", "mdlm"), objective, path)  # before the key: all mdlm
    tok = tokenizer_from_state(ckpt["tokenizer"])
    if tok.kind != kind:
        raise UserError(f"--init_from={path} has a {tok.kind} tokenizer, this run asks for --tokenizer={kind}: "
                        f"pass --tokenizer={tok.kind} (--init_from keeps the source's tokenizer)")
    return tok


def check_conversion(src, dst, path):
    if src != dst and (src, dst) not in CONVERSIONS:
        pairs = ", ".join(f"{a} -> {b}" for a, b in sorted(CONVERSIONS))
        raise UserError(f"--init_from={path} is a {src} model and this run trains {dst}: --init_from converts only "
                        f"{pairs} (or keeps the objective); train {dst} from scratch or pass --objective={src}")


def load_weights_into(model, path, tok, ckpt=None):
    """Copy the source's weights (EMA ones if kept) into model; tok, the run's tokenizer, must be the source's; ckpt:
    as for source_tokenizer. Returns a line saying what was converted."""
    ckpt = read_checkpoint(path) if ckpt is None else ckpt
    src_args, src_cfg = ckpt["model_args"], ckpt.get("config", {})
    fix = "(--init_from keeps the architecture and the tokenizer: match the source or train from scratch)"
    source_fp = fingerprint(tokenizer_from_state(ckpt["tokenizer"]))
    if fingerprint(tok) != source_fp:
        raise UserError(f"--init_from={path} was trained with another tokenizer (fingerprint {source_fp} vs this "
                        f"run's {fingerprint(tok)}) {fix}")
    known = {f.name: f.default for f in fields(ModelArgs)}  # a key older checkpoints lack has its default
    differ = [f"{k}={src_args.get(k, known[k])} (this run {getattr(model.args, k)})" for k in SHAPE_KEYS
              if src_args.get(k, known[k]) != getattr(model.args, k)]
    if differ:
        raise UserError(f"--init_from={path} has {', '.join(differ)} {fix}")
    own = model.state_dict()
    extra = {k for k in weights(ckpt) if k.startswith(INPUT_PREFIXES) and k not in own}  # inputs this model lacks
    state = {k: v for k, v in weights(ckpt).items() if k not in extra}
    src_t, own_t = state.get("time_emb.weight"), own.get("time_emb.weight")
    if src_t is not None and own_t is not None and src_t.shape != own_t.shape:
        raise UserError(f"--init_from={path} has a learned time embedding for diffusion_steps="
                        f"{src_args.get('diffusion_steps')} (this run {model.args.diffusion_steps}): pass "
                        f"--diffusion_steps={src_args.get('diffusion_steps')} (the source's)")
    result = model.load_state_dict(state, strict=False)
    lacking = [k for k in result.missing_keys if not k.startswith(INPUT_PREFIXES)]
    if lacking or result.unexpected_keys:
        raise UserError(f"--init_from={path} does not fit this model (missing {lacking[:3]}, unexpected "
                        f"{result.unexpected_keys[:3]}) {fix}")
    notes = []
    if model.time_emb is not None and "time_emb.weight" in result.missing_keys:
        nn.init.zeros_(model.time_emb.weight)  # adds nothing at first: the source's function, then learns t
        notes.append("time_emb starts at zero")
    if any(k.startswith("adaln.") for k in result.missing_keys):
        # zero weights (no dependence on t yet), gates 1 and shift/scale 0: every layer is x + attn(norm(x)),
        # x + mlp(norm(x)) as in the source, instead of adaLN-Zero's closed gates
        model.adaln.zero_init()
        with torch.no_grad():
            for lin in model.adaln.layers:
                lin.bias.view(6, -1)[[2, 5]] = 1.0  # (shift, scale, gate) for attention, then for the MLP: model.Layer
        notes.append("adaLN starts as the identity with open gates")
    if "sc_proj.weight" in result.missing_keys:  # zero-initialised by the model: reads nothing at first
        notes.append("the self-conditioning input starts at zero")
    if extra:
        dropped = sorted({k.split(".")[0] for k in extra})
        notes.append(f"the source's {' and '.join(dropped)} dropped")
    if src_args.get("causal") and not model.args.causal:
        notes.append("causal attention becomes bidirectional")
    return (f"init_from {path} ({src_cfg.get('objective', '?')}, iter {ckpt.get('iter', '?')}): "
            f"{len(state):,} tensors loaded{'; ' + '; '.join(notes) if notes else ''}; new optimizer, step 0")
