"""--init_from: start a new run from another checkpoint's weights (a new optimizer and step 0; the LR schedule
starts over). The tokenizer comes from the source, so the data is encoded as the source was trained; the
source's path stays in the new run's saved config.

    python train.py baby --objective=ar --max_iters=1000 --out_dir=artifacts/models/baby_ar_1k
    python train.py baby --init_from=artifacts/models/baby_ar_1k/model.pt --max_iters=1000 --out_dir=artifacts/models/baby_ar2mdlm

Conversions are only changes of what the same weights are used for: AR -> mdlm (causal attention becomes
bidirectional), AR -> bd3, mdlm -> bd3, and any objective to itself. A time embedding the source lacks starts
at zero, so the converted model first computes exactly what the source did (adaLN is zero-initialised by
construction); one the target lacks is dropped. Widths, depths, heads or tokenizers that differ are refused.
"""
import torch.nn as nn

from utils.checkpoint import read_checkpoint
from utils.errors import UserError
from utils.tokenizer import fingerprint, tokenizer_from_state

SHAPE_KEYS = ("n_layer", "n_head", "n_embd", "vocab_size")  # must match; block_size may differ (RoPE tables are computed)
TIME_PREFIXES = ("time_emb.", "adaln.")                      # the time input: what a source or target may lack


def source_tokenizer(path, kind):
    """The source's tokenizer, which the new run encodes its data with; kind is the run's --tokenizer."""
    tok = tokenizer_from_state(read_checkpoint(path)["tokenizer"])
    if tok.kind != kind:
        raise UserError(f"--init_from={path} has a {tok.kind} tokenizer, this run asks for --tokenizer={kind}: "
                        f"pass --tokenizer={tok.kind} (--init_from keeps the source's tokenizer)")
    return tok


def load_weights_into(model, path, tok):
    """Copy the source's weights (its EMA weights if it kept them, as load_model does) into model, in place.
    tok is the run's tokenizer; it must be the source's. Returns one line saying what was converted."""
    ckpt = read_checkpoint(path)
    src_args, src_cfg = ckpt["model_args"], ckpt.get("config", {})
    fix = "(--init_from keeps the architecture and the tokenizer: match the source or train from scratch)"
    if fingerprint(tok) != fingerprint(tokenizer_from_state(ckpt["tokenizer"])):
        raise UserError(f"--init_from={path} was trained with another tokenizer (fingerprint "
                        f"{fingerprint(tokenizer_from_state(ckpt['tokenizer']))} vs this run's {fingerprint(tok)}) {fix}")
    differ = [f"{k}={src_args.get(k)} (this run {getattr(model.args, k)})" for k in SHAPE_KEYS
              if src_args.get(k) != getattr(model.args, k)]
    if differ:
        raise UserError(f"--init_from={path} has {', '.join(differ)} {fix}")
    state = ckpt["ema"] if ckpt.get("ema") is not None else ckpt["model"]
    own = set(model.state_dict())
    dropped = sorted({k.split(".")[0] for k in state if k.startswith(TIME_PREFIXES) and k not in own})
    state = {k: v for k, v in state.items() if not (k.startswith(TIME_PREFIXES) and k not in own)}
    result = model.load_state_dict(state, strict=False)
    lacking = [k for k in result.missing_keys if not k.startswith(TIME_PREFIXES)]
    if lacking or result.unexpected_keys:
        raise UserError(f"--init_from={path} does not fit this model (missing {lacking[:3]}, unexpected "
                        f"{result.unexpected_keys[:3]}) {fix}")
    notes = []
    if model.time_emb is not None and "time_emb.weight" in result.missing_keys:
        nn.init.zeros_(model.time_emb.weight)  # adds nothing at first: the source's function, then learns t
        notes.append("time_emb starts at zero")
    if any(k.startswith("adaln.") for k in result.missing_keys):
        notes.append("adaLN starts at its zero init")
    if dropped:
        notes.append(f"the source's {' and '.join(dropped)} dropped")
    if src_args.get("causal") and not model.args.causal:
        notes.append("causal attention becomes bidirectional")
    return (f"init_from {path} ({src_cfg.get('objective', '?')}, iter {ckpt.get('iter', '?')}): {len(state):,} tensors loaded"
            f"{'; ' + '; '.join(notes) if notes else ''}; new optimizer, step 0")
