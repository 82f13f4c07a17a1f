"""Loading a trained model (train.py's model.pt or scripts/export.py's folder), the one way any
script gets one, and --init_from; utils/checkpoint.py, below model.py, keeps what needs no model.

--init_from starts a new run (new optimizer, step 0) from another checkpoint's weights and its
tokenizer, so the data is encoded as the source's was:

    python train.py baby --objective=ar --max_iters=1000 --out_dir=artifacts/models/baby_ar_1k
    python train.py baby --init_from=artifacts/models/baby_ar_1k/model.pt \
        --out_dir=artifacts/models/baby_ar2mdlm

Conversions: AR -> mdlm or bd3, mdlm -> bd3, any objective to itself. A missing time embedding
starts at zero and adaLN as the identity: the new model first computes what the source did.
"""
import json
import os
from dataclasses import fields, replace

import torch
import torch.nn as nn

from config import CHOICES, INT64_MAX, LIMITS, Config
from model import ModelArgs, Transformer
from objectives import SAMPLED_KEYS, effective, model_args
from utils.checkpoint import REMOVED, USE_INSTEAD, checksum, lacks_keys, load_checkpoint, migrate, removed_notes
from utils.errors import UserError, shown
from utils.fileio import is_shipped, require_checkpoints, shipped_checksums, shipped_for
from utils.tokenizer import fingerprint, tokenizer_from_state
from utils.values import check_values, coerce, known_key

EXPORT_WEIGHTS, EXPORT_CONFIG = "model.safetensors", "config.json"
EXPORT_BPE, EXPORT_CHARS = "tokenizer.json", "vocab.json"  # by tokenizer kind
EXPORT_FORMAT = "micro-dllm export 1"  # config.json's format field
EXPORT_AGAIN = "export it again with scripts/export.py"
CHANGED = "it was changed after train.py or scripts/export.py wrote it; use the file they wrote"


# ---------------------------------------------------------------------------- its config
def checkpoint_config(ckpt, where):
    """A checkpoint's (or export's) config dict (migrate renamed old keys) as the Config its
    objective runs: checked as a command line (one line naming `where`), removed keys dropped, then
    against the rest of what the file holds: its network (model_args, the network this config
    trains) and its tokenizer's kind. An edit that one part does not share is refused in one line
    (config.json's objective='ar' on a masked-diffusion network was an AssertionError deep in the
    forward)."""
    try:
        kept = {known_key(k): v for k, v in ckpt["config"].items() if k not in REMOVED}
        cfg = replace(Config(), **{k: coerce(k, v) for k, v in kept.items()})
        check_values(cfg)
    except UserError as e:
        raise UserError(f"{where}'s config: {e}; it was changed after train.py wrote it: use the file it "
                        f"wrote") from None
    # every key of a checkpoint's config is what ran: given, never a preset's
    cfg = effective(cfg, given=set(ckpt["config"]))
    have = ckpt["model_args"]
    want = vars(model_args(cfg, have.get("vocab_size", 0)))
    differ = [k for k in want if k in have and have[k] != want[k]]  # (a key an older file lacks: its default)
    if differ:
        said = ", ".join(f"{k}={want[k]!r}" for k in differ)
        held = ", ".join(f"{k}={have[k]!r}" for k in differ)
        raise UserError(f"{where}: its config (objective={cfg.objective!r}) describes a network with {said}, its "
                        f"model_args hold {held}: it was changed after train.py or scripts/export.py wrote it; use "
                        f"the file they wrote")
    kind = ckpt["tokenizer"].get("kind")
    if cfg.tokenizer != kind:
        raise UserError(f"{where}: its config says tokenizer={cfg.tokenizer!r}, its tokenizer is {kind!r}: it was "
                        f"changed after train.py or scripts/export.py wrote it; use the file they wrote")
    if "format" in ckpt:  # an export's config.json: its own copies, which nothing else reads, must agree
        copies = dict(objective=cfg.objective, schedule=cfg.schedule, diffusion_steps=cfg.diffusion_steps,
                      mask_id=tokenizer_from_state(ckpt["tokenizer"]).mask_id)
        for key, value in copies.items():
            if ckpt.get(key) != value or type(ckpt.get(key)) is not type(value):
                raise UserError(f"{where}: config.json's {key}={ckpt.get(key)!r} disagrees with its config and "
                                f"tokenizer ({key}={value!r}): it was changed after scripts/export.py wrote it; export "
                                f"it again")
    return cfg


# ---------------------------------------------------------------------------- a trained model
def check_contents(ckpt, path, export=False):
    """What a checkpoint or export holds beside its config, field by field as written, before a
    layer is built: removed options (their notes in ckpt["notes"]; model_args less them), its
    network's ModelArgs and vocabulary, its step, its text's chars per token, an export's format
    and EMA flag (checkpoint_config checks the config against the rest)."""
    ckpt["notes"] = removed_notes(ckpt["config"], f"checkpoint {path}")
    ckpt["notes"] += removed_notes(ckpt["model_args"], f"checkpoint {path}")
    args = {k: v for k, v in ckpt["model_args"].items() if k not in REMOVED}
    types = {f.name: f.type for f in fields(ModelArgs)}
    for key, value in args.items():
        typ = types.get(key)
        if typ is None or not (type(value) is typ or typ is float and type(value) is int):
            raise UserError(f"checkpoint {path}: its model_args hold {key}={shown(value)}, which is no ModelArgs "
                            f"{typ.__name__ if typ else 'key'}: {CHANGED}")
        top = LIMITS.get(key, (INT64_MAX,))[0]
        if typ is int and not 1 <= value <= top:
            raise UserError(f"checkpoint {path}: its model_args hold {key}={value:,}, outside 1 to {top:,}: {CHANGED}")
    vocab = tokenizer_from_state(ckpt["tokenizer"]).vocab_size
    if args.get("vocab_size") != vocab:
        raise UserError(f"checkpoint {path}: its network reads vocab_size={args.get('vocab_size')} tokens, its "
                        f"tokenizer has {vocab}: {CHANGED}")
    ckpt["model_args"] = args
    where = f"checkpoint {path}: its"
    if not (type(ckpt["iter"]) is int and ckpt["iter"] >= 0):
        raise UserError(f"{where} iter={shown(ckpt['iter'])} is no step count: {CHANGED}")
    meta = ckpt.get("meta", {})
    cpt = meta.get("chars_per_token", 1.0) if isinstance(meta, dict) else None
    if not (type(cpt) in (int, float) and 0 < cpt < float("inf")):
        raise UserError(f"{where} meta={shown(meta)} holds no chars_per_token > 0: {CHANGED}")
    if not export:  # the rest are an export's
        return
    where = f"exported model {path}: {EXPORT_CONFIG}'s"
    if ckpt.get("format") != EXPORT_FORMAT:
        raise UserError(f"{where} format={shown(ckpt.get('format'))} is not {EXPORT_FORMAT!r}: {CHANGED}")
    if type(ckpt.get("ema_weights")) is not bool:
        raise UserError(f"{where} ema_weights={shown(ckpt.get('ema_weights'))} is neither true nor false: {CHANGED}")


def config_checksum(meta):
    """The digest of an export's config.json (meta: its JSON) over what the network means: all but
    this digest and the sampling defaults (the keys inference.py takes: objectives.SAMPLED_KEYS, the
    user's to edit)."""
    covered = {k: v for k, v in meta.items() if k != "config_checksum"}
    covered["config"] = {k: v for k, v in meta.get("config", {}).items() if k not in SAMPLED_KEYS}
    return checksum(covered)


def load_export(path):
    """The checkpoint-shaped dict of a scripts/export.py folder."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    missing = [n for n in (EXPORT_WEIGHTS, EXPORT_CONFIG) if not os.path.isfile(os.path.join(path, n))]
    if missing:
        raise UserError(f"checkpoint {path} is a directory without {' and '.join(missing)}: {USE_INSTEAD}")
    try:
        with open(os.path.join(path, EXPORT_CONFIG), encoding="utf-8") as f:
            meta = json.load(f)
        if lacks_keys(meta, but="model"):  # REQUIRED but the weights (model.safetensors)
            raise ValueError("missing keys")
        bpe = meta["tokenizer"].get("kind") == "bpe"
        with open(os.path.join(path, EXPORT_BPE if bpe else EXPORT_CHARS), encoding="utf-8") as f:
            tokenizer = dict(kind="bpe", json=f.read()) if bpe else dict(kind="char", chars=json.load(f)["chars"])
        if not isinstance(tokenizer.get("json", tokenizer.get("chars")), str):
            raise ValueError("no vocabulary")
    except FileNotFoundError as e:
        raise UserError(f"exported model {path} lacks {os.path.basename(e.filename)}: {EXPORT_AGAIN}") from None
    except RecursionError:  # [[[...]]] past Python's recursion: no config.json export.py writes
        raise UserError(f"exported model {path}: its {EXPORT_CONFIG} nests values too deep to read: "
                        f"{EXPORT_AGAIN}") from None
    except (ValueError, KeyError, TypeError, AttributeError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise UserError(f"exported model {path} has an unreadable {EXPORT_CONFIG} or vocabulary: "
                        f"{EXPORT_AGAIN}") from None
    try:
        tensors = load_file(os.path.join(path, EXPORT_WEIGHTS))
    except (SafetensorError, OSError, ValueError) as e:
        raise UserError(f"{os.path.join(path, EXPORT_WEIGHTS)} is corrupt or not a safetensors file "
                        f"({str(e).splitlines()[0][:80]}): {EXPORT_AGAIN}") from None
    if "weights_checksum" in meta and meta["weights_checksum"] != checksum(tensors):
        raise UserError(f"{os.path.join(path, EXPORT_WEIGHTS)} is damaged: its weights do not match the checksum "
                        f"{EXPORT_CONFIG} holds: {EXPORT_AGAIN}")
    if "config_checksum" in meta and meta["config_checksum"] != config_checksum(meta):
        raise UserError(f"exported model {path}: its {EXPORT_CONFIG} was changed after scripts/export.py wrote it (a "
                        f"trained key, the network, the tokenizer, its step or its 'about' figures; only the sampling "
                        f"defaults may change): restore the file as written, or {EXPORT_AGAIN}")
    ckpt = migrate({**meta, "model": tensors, "tokenizer": tokenizer})
    if fingerprint(tokenizer_from_state(tokenizer)) != meta.get("tokenizer_fingerprint"):
        raise UserError(f"the tokenizer in {path} is not the one its model was trained with (fingerprints differ): "
                        f"{EXPORT_AGAIN}")
    return ckpt


def weights(ckpt):
    """The state_dict a checkpoint runs with: the EMA weights if trained with --ema."""
    return ckpt["ema"] if ckpt.get("ema") is not None else ckpt["model"]


def read_checkpoint(path, instead="give the path of one that exists"):
    """A model.pt's or export's dict, in this version's names; instead: how to give another.
    A removed key that acted on the network is refused; ckpt["notes"] say which others were
    dropped. A preset's own run not trained yet reads the weights the repo ships, and says so."""
    path = require_checkpoints([path], instead)[0]  # (a preset's run not trained yet: the shipped weights)
    export = os.path.isdir(path) and bool(os.listdir(path))
    ckpt = load_export(path) if export else load_checkpoint(path)
    check_contents(ckpt, path, export)
    if export and "config_checksum" not in ckpt:  # written before it: read as found
        ckpt["notes"].append(f"note: exported model {path} predates {EXPORT_CONFIG}'s checksum: an edit to its "
                             f"trained keys goes unseen; {EXPORT_AGAIN} to have them checked")
    # one line for the shipped weights: which they are, how they were made, how to train your own
    if is_shipped(path) and not is_as_shipped(path, ckpt):
        print(f"reading {path}: its files are not the ones this repo ships (artifacts/weights/checksums.txt lists "
              f"another checksum for {os.path.basename(os.path.normpath(path))}); they were exported there since")
    elif is_shipped(path):
        about = ckpt.get("about", {})
        made = f"made by `{about['command']}`, test {about['test']}" if {"command", "test"} <= about.keys() else ""
        own = os.path.join("artifacts", "models", os.path.basename(os.path.normpath(path)), "model.pt")
        print(f"reading {path}, the weights this repo ships{f' ({made})' if made else ''}: a run of your own at "
              f"{own} is read instead once you train it")
    say_if_unfinished(path, ckpt)
    return ckpt


def is_as_shipped(path, ckpt):
    """Whether the export at path is the one the repo ships: its config checksum (covering the
    weights' own; load_export checked both) is the one listed for its folder."""
    name = os.path.basename(os.path.normpath(path))
    return ckpt.get("config_checksum") is not None and shipped_checksums().get(name) == ckpt["config_checksum"]


def say_if_unfinished(path, ckpt):
    """One line where path is a preset's own run, read in place of its shipped weights, whose
    checkpoint is not its last step (iter < its max_iters): training still, or stopped early."""
    shipped = shipped_for(path)
    last = ckpt["config"].get("max_iters")
    if shipped is not None and type(last) is int and ckpt["iter"] < last:
        print(f"reading {path}, your run at step {ckpt['iter']:,} of its {last:,} (still training, or stopped "
              f"before its end), in place of {shipped}, the weights this repo ships: give {shipped} to read those")


def load_model(path, device, ckpt=None):
    """(model in eval mode on device, the checkpoint dict) of a model.pt or exported folder (ckpt:
    read_checkpoint's, if read already); prints the notes of removed keys it dropped."""
    ckpt = read_checkpoint(path) if ckpt is None else ckpt
    for note in ckpt["notes"]:
        print(note)
    try:
        model = Transformer(ModelArgs(**ckpt["model_args"]))
        model.load_state_dict(weights(ckpt))
    except (RuntimeError, TypeError, ValueError) as e:
        raise UserError(f"checkpoint {path} does not match its own model description "
                        f"({str(e).splitlines()[0][:100]}): the file is damaged")
    if torch.device(device).type == "cpu":
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):  # (in, out) in memory: MKL's few-row GEMM ~2x faster
                m.weight.data = m.weight.data.t().contiguous().t()
    return model.to(device).eval(), ckpt


# ---------------------------------------------------------------------------- --init_from
SHAPE_KEYS = ("n_layer", "n_head", "n_embd", "vocab_size", "tie_weights")  # must match; block_size may differ (RoPE)
INPUT_PREFIXES = ("time_emb.", "adaln.", "sc_proj.")  # time and self-conditioning inputs: either side may lack them
CONVERSIONS = {("ar", "mdlm"), ("ar", "bd3"), ("mdlm", "bd3")}  # source -> target, besides X -> X


def source_tokenizer(path, kind, objective, ckpt=None):
    """The source's tokenizer, checked against this run's kind and objective before data is read."""
    ckpt = read_checkpoint(path) if ckpt is None else ckpt
    check_conversion(ckpt.get("config", {}).get("objective", "mdlm"), objective, path)  # before the key: all mdlm
    tok = tokenizer_from_state(ckpt["tokenizer"])
    if tok.kind != kind:
        raise UserError(f"--init_from={path} has a {tok.kind} tokenizer, this run asks for --tokenizer={kind}: "
                        f"pass --tokenizer={tok.kind} (--init_from keeps the source's tokenizer)")
    return tok


def check_conversion(src, dst, path):
    known = CHOICES["objective"]
    if src not in known:  # advise only what this version takes
        raise UserError(f"--init_from={path} names objective={shown(src)}, which this version does not know (it "
                        f"knows {', '.join(known)}): {CHANGED}, or train {dst} from scratch")
    if src != dst and (src, dst) not in CONVERSIONS:
        pairs = ", ".join(f"{a} -> {b}" for a, b in sorted(CONVERSIONS))
        raise UserError(f"--init_from={path} is a {src} model and this run trains {dst}: --init_from converts only "
                        f"{pairs} (or keeps the objective); train {dst} from scratch or pass --objective={src}")


def open_adaln(adaln):
    """Zero weights (no t yet), gates 1, shift and scale 0: each layer computes the source's
    x + attn(norm(x)), x + mlp(norm(x)), not adaLN-Zero's closed gates."""
    adaln.zero_init()
    with torch.no_grad():
        for lin in adaln.layers:
            lin.bias.view(6, -1)[[2, 5]] = 1.0  # (shift, scale, gate) for attention, then for the MLP: model.Layer


def load_weights_into(model, path, tok, ckpt=None):
    """Copy the source's weights (EMA if kept) into model (tok: its own); a line of what changed."""
    ckpt = read_checkpoint(path) if ckpt is None else ckpt
    src_args, src_cfg = ckpt["model_args"], ckpt.get("config", {})
    fix = "(--init_from keeps the architecture and the tokenizer: match the source or train from scratch)"
    source_fp = fingerprint(tokenizer_from_state(ckpt["tokenizer"]))
    if fingerprint(tok) != source_fp:
        raise UserError(f"--init_from={path} was trained with another tokenizer (fingerprint {source_fp} vs this "
                        f"run's {fingerprint(tok)}) {fix}")
    known = {f.name: f.default for f in fields(ModelArgs)}  # a key older checkpoints lack: its default
    differ = [f"{k}={src_args.get(k, known[k])} (this run {getattr(model.args, k)})" for k in SHAPE_KEYS
              if src_args.get(k, known[k]) != getattr(model.args, k)]
    if differ:
        raise UserError(f"--init_from={path} has {', '.join(differ)} {fix}")
    own = model.state_dict()
    source = weights(ckpt)  # the EMA weights, if kept
    extra = {k for k in source if k.startswith(INPUT_PREFIXES) and k not in own}  # inputs this model lacks
    state = {k: v for k, v in source.items() if k not in extra}
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
        nn.init.zeros_(model.time_emb.weight)  # adds nothing at first, then learns t
        notes.append("time_emb starts at zero")
    if any(k.startswith("adaln.") for k in result.missing_keys):
        open_adaln(model.adaln)
        notes.append("adaLN starts as the identity with open gates")
    if "sc_proj.weight" in result.missing_keys:  # zero-initialised by the model
        notes.append("the self-conditioning input starts at zero")
    if extra:
        dropped = sorted({k.split(".")[0] for k in extra})
        notes.append(f"the source's {' and '.join(dropped)} dropped")
    if src_args.get("causal") and not model.args.causal:
        notes.append("causal attention becomes bidirectional")
    return (f"init_from {path} ({src_cfg.get('objective', '?')}, iter {ckpt.get('iter', '?')}): "
            f"{len(state):,} tensors loaded{'; ' + '; '.join(notes) if notes else ''}; new optimizer, step 0")
