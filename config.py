"""All hyperparameters in one typed block, and the presets: the file to edit. It imports nothing from the project.

Defaults are the reference micro-dLLM (char-level, 6/6/384, ctx 256, T=100, cosine survival schedule, batch 64,
5000 iters, AdamW 3e-4). Override in three layers, later wins (parsed and checked by configurator.py):

    python train.py                                   # defaults
    python train.py cpu                               # a named preset (see PRESETS)
    python train.py my_experiment.py                  # a Python file of `key = value` lines
    python train.py cpu --max_iters=200 --device cpu  # --key=value or --key value
    python train.py --resume                          # bare --flag sets a bool to True

Unknown keys and values of the wrong type are refused (exit 2) with close matches. Each objective module
(diffusion.py, bd3.py, uniform.py, ar.py) lists the keys it does not read in its IGNORES.

What a key is to the program sits on its field, through the helpers below: trained() (the checkpoint fixes it),
resumable() (a resumed run may change it), sampled() (inference.py reads it from its command line), sampling_only()
(inference.py alone reads it); so do the values it accepts (choices=, gathered in CHOICES, from which the modules that
implement them import them). The comments, the `# ---- section` headings among them, are for the reader and
`--help` only: editing or moving one changes no behaviour (tests/test_config.py).
"""
from dataclasses import dataclass, field, fields


def trained(default, choices=()):
    """A setting of the trained model (or of its data): sampling always takes it from the checkpoint."""
    return field(default=default, metadata={"trained": True, "choices": choices})


def resumable(default):
    """A setting a resumed run may change; every other one comes from the checkpoint it resumes."""
    return field(default=default, metadata={"resumable": True})


def sampled(default, resumable=False, choices=()):
    """A setting sampling reads: inference.py takes it from its command line (or a preset), every other key from the
    checkpoint it samples. resumable=True: a resumed run may change it too (the device)."""
    return field(default=default, metadata={"sampled": True, "resumable": resumable, "choices": choices})


def sampling_only(default):
    """A setting only inference.py reads (train.py refuses it: its end-of-run samples continue --prompt)."""
    return field(default=default, metadata={"sampled": True, "sampling_only": True})


def one_of(default, choices):
    """A setting with no other role than a list of values it accepts."""
    return field(default=default, metadata={"choices": choices})


class Tristate(str):
    """'auto' | 'true' | 'false'. As for a bool, a bare --flag means 'true'; True or False (from a config file or an
    older checkpoint) reads as 'true' or 'false'."""

    def __new__(cls, value):
        return super().__new__(cls, str(value).lower() if isinstance(value, bool) else value)

    # a checkpoint's config (asdict) holds a plain str: torch.load(weights_only=True) reads no other
    def __reduce__(self):
        return str, (str(self),)


@dataclass
class Config:
    # ---- data
    data_path: str = trained("data/tinyshakespeare.txt")  # text file; make one with scripts/data.py
    val_path: str = trained("")         # separate validation text; "" = last val_fraction of data_path
    val_fraction: float = 0.1           # nanoGPT's split: first 90% train, last 10% val
    tokenizer: str = trained("char", choices=("char", "bpe"))  # 'char' (vocab from the data + [MASK]) | 'bpe'
    tokenizer_path: str = "artifacts/tokenizer/tokenizer.json"  # bpe only (scripts/train_tokenizer.py)
    # ---- model
    block_size: int = trained(256)      # context length in tokens
    n_layer: int = trained(6)           # transformer blocks
    n_head: int = trained(6)            # attention heads per block
    n_embd: int = trained(384)          # model width (head_dim = n_embd / n_head)
    time_cond: str = trained("learned", choices=("learned", "adaln", "none"))  
                                        # 'learned' Embedding(T+1, d) added to the input
                                        #   | 'adaln' (DiT adaLN-Zero) | 'none'
    dropout: float = 0.0                # training only (nanoGPT's key): embeddings, attention, MLP output; off in eval
    qk_norm: bool = trained(False)      # RMSNorm on queries and keys after RoPE (nanochat, the reference micro-dLLM)
    self_cond: bool = trained(False)    # mdlm, bd3: self-conditioning (Chen et al. 2022): the net also reads its own
                                        #   first prediction of x0
                                        #   (a second pass; training feeds it to half the sequences)
    tie_weights: bool = trained(False)  # the output head reuses the token embedding matrix (nanoGPT ties them)
    # ---- objective
    objective: str = trained("mdlm", choices=("mdlm", "uniform", "ar", "bd3"))  
                                        # 'mdlm' masked diffusion (diffusion.py) | 'uniform' uniform-state diffusion
                                        # (no [MASK]; uniform.py) | 'ar' the same net, causal, next-token loss (ar.py)
                                        # | 'bd3' block diffusion (bd3.py); objectives.py is the table
    bd3_block: int = trained(4)         # bd3: tokens per block L', divides block_size;
                                        #   1 = AR, block_size = MDLM (BD3-LM)
    mask_min: float = 0.0               # mdlm/bd3 training only: the lowest mask rate drawn
                                        #   (the band [mask_min, mask_max], BD3-LM's variance fix, e.g. 0.3);
                                        #   validation always reports the full bound
    mask_max: float = 1.0               # mdlm/bd3 training only: the highest mask rate drawn
                                        #   (the band's top, e.g. 0.8)
    mask_ramp: float = 0.0              # mdlm training: an easy-to-hard curriculum on t (Quokka):
                                        #   the fraction of max_iters over which the band's top rises linearly
                                        #   from mask_ramp_from to mask_max; 0 = off
    mask_ramp_from: float = 0.5         # mdlm training, with mask_ramp > 0: the band's top at step 0
                                        #   (it rises to mask_max)
    bd3_loss: str = one_of("elbo", ("elbo", "all_ce"))  # bd3 training: 'elbo' its NELBO
                                        #   | 'all_ce' plain CE on every noisy position (no w(t))
    bd3_ar: float = trained(0.0)        # bd3: weight of a next-token loss on the clean half,
                                        #   which then attends causally; 0 = off
    dual_ar: float = trained(0.0)       # mdlm training: weight of the dual objective's next-token CE, a second pass
                                        #   of the same network attending causally over the clean window (Eso-LM);
                                        #   0 = off; the bound is unchanged
    diffusion_steps: int = trained(100)  # T: discrete time steps of the forward process (at most 1,000,000)
    schedule: str = trained("cosine", choices=("cosine", "linear"))  
                                        # survival alpha(t): 'cosine' cos(pi/2 t/T) | 'linear' 1 - t/T
    loss_type: str = one_of("elbo", ("elbo", "masked_ce", "all_ce"))  
                                        # 'elbo' weighted NELBO | 'masked_ce' | 'all_ce' (reference objectives)
    mask_draws: int = 1                 # mdlm/bd3 training: independent masks (and times) of each window a step,
                                        #   each its own pass: the loss's noise averaged over k draws of the same
                                        #   tokens; k x the passes
    # ---- optimisation
    batch_size: int = 64                # sequences per step
    max_iters: int = resumable(5000)    # 0 = build everything, print config and parameter count, exit
    data_steps: int = 0                 # > 0: the data repeats every data_steps steps
                                        #   (step i trains on step i % data_steps's batch):
                                        #   max_iters = k x data_steps sees the same tokens k times (equal-FLOPs ARs)
    learning_rate: float = 3e-4         # peak AdamW LR
    min_lr: float = 3e-5                # the cosine decay's floor (LR / 10, as nanoGPT)
    warmup_iters: int = 100             # linear warm-up steps
    weight_decay: float = 0.1           # on 2-D weights only
    beta1: float = 0.9                  # AdamW's first-moment decay
    beta2: float = 0.99                 # 0.99: small batches (nanoGPT char recipe)
    grad_clip: float = 1.0              # 0 disables
    total_batch_size: int = 0           # tokens per optimizer step, all ranks;
                                        #   0 = batch_size*block_size*world; more = accumulate
    optimizer: str = one_of("adamw", ("adamw", "muon"))  # 'adamw'
                                        #   | 'muon' (Muon on the layers' 2-D weights, AdamW on embeddings and head)
    muon_lr: float = 0.02               # peak Muon LR (same warm-up/cosine shape as learning_rate)
    muon_momentum: float = 0.95         # Muon's Nesterov momentum
    ema: float = 0.0                    # 0 = off; else the decay (e.g. 0.999) of a weight average
                                        #   used for eval and samples
    activation_checkpointing: bool = resumable(False)  # keep each layer's input only, recompute it in backward
                                        #   (torch.utils.checkpoint): ~1/n_layer of the activations, ~4/3 of the compute
    # ---- eval, logging, checkpoints
    eval_interval: int = resumable(250)  # steps between validation passes
    eval_iters: int = resumable(20)     # validation batches per pass (same batches every time); every eval scores them
                                        # at 4 t per window (train.EVAL_T), so best.pt compares like figures (README)
    log_interval: int = resumable(10)   # steps between log lines
    out_dir: str = resumable("artifacts/models")  # model.pt (latest/final) and best.pt land here
    resume: bool = resumable(False)     # continue from out_dir/model.pt (step, optimizer, LR schedule)
    init_from: str = ""                 # a model.pt or exported folder: start from its weights and tokenizer
                                        # (new optimizer, step 0); AR -> mdlm/bd3, mdlm -> bd3 (checkpoint_manager.py)
    overwrite: bool = resumable(False)  # allow replacing an earlier run's files: out_dir's checkpoints, best.pt and
                                        #   metrics.jsonl, and the end-of-run trace (--viz_video and its GIF)
    keep_last: int = resumable(2)       # checkpoints kept: the K newest as model_<iter>.pt
                                        # (model.pt links the newest) + best.pt; 1 = model.pt and best.pt only
    skip_nonfinite: int = resumable(0)  # steps with a NaN/inf loss or gradient skipped (no update)
                                        # before training stops; 0 = stop at the first
                                        # (> 0 costs one host sync per step)
    # ---- sampling (inference.py, and the samples at the end of training)
    checkpoint: str = sampling_only("artifacts/models/model.pt")  # the model.pt (or exported folder) to sample from
    prompt: str = sampled("")           # text the sample must start with
    gen_len: int = sampled(256)         # tokens to generate after the prompt
    steps: int = sampled(100)           # reverse steps (NFE); <= diffusion_steps. bd3: per block, at most its length
    temperature: float = sampled(1.0)   # 0 = argmax, else >= 1e-6; sampled in float64
    temperature_end_share: float = sampled(1.0)  # diffusion (mdlm, bd3): the temperature falls linearly
                                        #   with the share of the block still masked, from temperature (all masked)
                                        #   to temperature * this (1 = constant)
    top_k: int = sampled(0)             # 0 = off
    top_p: float = sampled(1.0)         # 1.0 = off
    num_samples: int = sampled(1)       # samples drawn in one batch
    viz_video: str = sampled("")        # MP4 path for the denoising trace (a GIF is written beside it)
    trace_every: int = sampled(1)       # record one frame every N steps
    gif_frame_ms: int = sampled(180)    # GIF/MP4 frame duration (10 to 655,350: a GIF's hundredths of a second)
    infill: str = sampling_only("")           # text with blanks to fill:
                                        #   [___] = one token per marker character, [___:N] = N tokens
    prefix_file: str = sampling_only("")      # the sample starts with this file's text (instead of --prompt)
    suffix_file: str = sampling_only("")      # the sample ends with this file's text; gen_len tokens go between
    order: str = sampled("confidence", choices=("confidence", "margin", "entropy", "random", "l2r"))  
                                        # reveal first: 'confidence' | 'margin' (top1 - top2)
                                        #   | 'entropy' (low first) | 'random'
                                        #   | 'l2r' (leftmost masked first:
                                        #   with one token a step, decodes left to right)
    tokens_per_step: str = sampled("schedule", choices=("schedule", "linear", "cosine"))  
                                        # reveals per step: 'schedule' (1 - alpha(t))
                                        #   | 'linear' (LLaDA) | 'cosine' (MaskGIT)
    remask: str = sampled("refine", choices=("refine", "none", "remdm"))  
                                        # 'refine' (reference) | 'none' (LLaDA: committed tokens final)
                                        #   | 'remdm' (ReMDM)
    remask_eta: float = sampled(0.02)   # remask='remdm': eta, the cap of sigma_t = min(eta, sigma_max),
                                        #   a committed token's re-mask probability (ReMDM's max-capped schedule)
    threshold: float = sampled(0.0)     # Fast-dLLM: commit every position with confidence > threshold,
                                        #   >= 1 per step; 0 = off
    semi_ar_length: int = sampled(0)    # semi-AR: decode left to right, this many tokens at a time (0 = all at once);
                                        # lets prompt + gen_len exceed block_size
                                        # (a sliding window keeps the latest context)
    bd3_speculate: bool = sampled(False)  # bd3, a --bd3_ar network: sample its clean half's AR exactly,
                                        #   the noisy half drafting each block in the same pass
                                        #   (self-speculative; a preset's on another network: off)
    dual_sample: bool = sampled(False)  # mdlm, a --dual_ar network: sample its AR mode exactly (the same weights
                                        #   attending causally, KV-cached, a token a pass: exact samples of that
                                        #   joint); continues a prompt only
    live: bool = sampling_only(False)         # redraw the canvas in the terminal at every step
                                        #   (plain text when not a terminal)
    prompts_file: str = sampling_only("")     # sample once per line of this file (blank lines skipped)
    interactive: bool = sampling_only(False)  # read prompts from stdin in a loop until EOF (Ctrl-D)
    # ---- system
    device: str = sampled("auto", resumable=True)  # 'auto' (cuda -> mps -> cpu) | 'cpu' | 'cuda' | 'cuda:1' | 'mps'
    dtype: str = sampled("auto", choices=("auto", "float32", "bfloat16", "float16"))  
                                        # 'auto' (bf16 autocast on CUDA, fp16 + GradScaler on a GPU without bf16,
                                        #   fp32 elsewhere) | 'float32' | 'bfloat16' | 'float16'
    compile: Tristate = sampled(Tristate("auto"), resumable=True, choices=("auto", "true", "false"))  
                                        # 'auto' (torch.compile on CUDA: the training step's model,
                                        #   with CUDA graphs on one GPU, and sampling's KV-cached decode step,
                                        #   CUDA-graphed; eager elsewhere: a CPU gains nothing measured)
                                        #   | 'true' | 'false'; bare --compile: 'true'
    seed: int = sampled(1337)           # the random seed (>= 0): initialisation, data order, noise draws, samples
    wandb_log: bool = resumable(False)  # also log to Weights & Biases (pip install wandb);
                                        #   metrics.jsonl is always written
    wandb_project: str = resumable("micro-dllm")  # the Weights & Biases project (with wandb_log)


CHOICES = {f.name: f.metadata["choices"] for f in fields(Config) if f.metadata.get("choices")}  # key -> its values
UNSCORED_ORDERS = ("random", "l2r")  # orders no model score ranks: threshold decoding cannot use them

# A key that acts only together with another: {key: (that key, the values it acts with; None: any but off)}. Given
# alone, configurator.validate refuses it (what the user asks for is what runs: a flag that cannot apply is refused,
# never dropped), and scripts/frontier.py drops it from a grid point where it does not act.
NEEDS = dict(
    val_fraction=("val_path", ("",)), tokenizer_path=("tokenizer", ("bpe",)), mask_ramp_from=("mask_ramp", None),
    muon_lr=("optimizer", ("muon",)), muon_momentum=("optimizer", ("muon",)),
    init_from=("resume", (False,)), wandb_project=("wandb_log", None),
    top_k=("temperature", None), top_p=("temperature", None), temperature_end_share=("temperature", None),
    remask_eta=("remask", ("remdm",)), tokens_per_step=("threshold", (0.0,)), trace_every=("viz_video", None),
    gif_frame_ms=("viz_video", None))

# The presets: one flat literal each, every key it sets (as nanoGPT's config/*.py files); keys repeat across presets so
# that each recipe reads in one place. The comment above a preset is its line in `python train.py --help`, and
# `python train.py PRESET --help` prints the whole resolved config with the preset's keys marked. A preset whose data
# file is missing names the command that makes it. What each one gives: RESULTS.md; how each setting won: dev/LOG.md.
#
# The baby budget is nanoGPT's "baby" CPU config (4/4/128, ctx 64, 12 x 2,000 steps = 1,536,000 tokens, <= 0.85M
# params, its split); the laptop budget is 4/4/128, ctx 128, 32 x 2,000 steps (8.19M tokens). Each preset's time:
# README's Presets table.
# What won at both, for every objective (dev/LOG.md has the measurements): QK-norm, Muon at 0.005 with a weight EMA,
# the LR floor at 30 % of the peak; for masked diffusion no time input with the CE of every position (-0.23 nats/char
# against learned time + ELBO), mask rates in [0.2, 0.8] whose top rises from 0.5 over the run, self-conditioning and
# a 1,000-step chain (a network without time input defines one at any T; the finer chain's bound was the tighter on
# every checkpoint measured). At the baby budget: Muon's momentum 0.9 and no weight decay.
PRESETS = {
    # The speedrun's masked diffusion at the baby budget: the budget's winners (noted above PRESETS), the dual
    # objective's causal pass at a quarter weight and four masks of each window a step (the step 4.6x the AR's); it
    # samples ancestrally, the temperature falling from 1.0 as the canvas fills. The AR at this budget:
    # --objective=ar --min_lr=1e-4 --muon_momentum=0.95 --weight_decay=0.1.
    "baby": dict(
        data_path="data/tinyshakespeare.txt", block_size=64, n_layer=4, n_head=4, n_embd=128, qk_norm=True,
        time_cond="none", self_cond=True,
        loss_type="all_ce", diffusion_steps=1000, mask_min=0.2, mask_max=0.8, mask_ramp=1.0, mask_ramp_from=0.5,
        dual_ar=0.25, mask_draws=4,
        batch_size=12, max_iters=2000, learning_rate=1e-3, min_lr=3e-4, warmup_iters=100, weight_decay=0.0,
        optimizer="muon", muon_lr=0.005, muon_momentum=0.9, ema=0.999,
        eval_interval=500, eval_iters=10, log_interval=100,  # 120 windows x 4 t: +- 0.005 between two evals (paired)
        out_dir="artifacts/models/baby", checkpoint="artifacts/models/baby/model.pt",
        prompt="ROMEO:", gen_len=48, steps=48, order="random", remask="none", temperature=1.0,
        temperature_end_share=0.1,
        viz_video="artifacts/media/baby_trace.mp4"),
    # The best diffusion recipe at the baby budget: block diffusion, blocks of 4, mask rates in [0.3, 1] (BD3-LM's
    # variance fix) with the plain CE of every noisy position, the clean half learning the next token (--bd3_ar), two
    # masks of each window a step, a tied head; it samples its clean half's AR exactly, the noisy half drafting each
    # block (--bd3_speculate; =false: left to right in each block).
    "baby_bd3": dict(
        data_path="data/tinyshakespeare.txt", block_size=64, n_layer=4, n_head=4, n_embd=128, qk_norm=True,
        self_cond=True, tie_weights=True,
        objective="bd3", bd3_block=4, bd3_loss="all_ce", bd3_ar=1.0, diffusion_steps=1000, mask_min=0.3, mask_draws=2,
        batch_size=12, max_iters=2000, learning_rate=1e-3, min_lr=3e-4, warmup_iters=100, weight_decay=0.0,
        optimizer="muon", muon_lr=0.005, muon_momentum=0.9, ema=0.999,
        eval_interval=500, eval_iters=10, log_interval=100,
        out_dir="artifacts/models/baby_bd3", checkpoint="artifacts/models/baby_bd3/model.pt",
        prompt="ROMEO:", gen_len=48, steps=48, order="l2r", remask="none", bd3_speculate=True,
        viz_video="artifacts/media/baby_bd3_trace.mp4"),
    # nanoGPT's train_shakespeare_char recipe, diffusion flavour: the reference defaults (a GPU job).
    "shakespeare_char": dict(data_path="data/tinyshakespeare.txt", out_dir="artifacts/models/shakespeare_char",
                             checkpoint="artifacts/models/shakespeare_char/model.pt"),
    # TinyStories at character level; train on the train file, validate on the valid file.
    "tinystories_char": dict(data_path="data/tinystories_train.txt", val_path="data/tinystories_valid.txt",
                             out_dir="artifacts/models/tinystories_char",
                             checkpoint="artifacts/models/tinystories_char/model.pt", prompt="Once upon a time"),
    # The reference BPE recipe: 10k TinyStories in data/stories.txt (scripts/data.py), a 2,048-token byte-level BPE
    # (scripts/train_tokenizer.py): 12,228,480 parameters at the default 6/6/384; --gen-len counts BPE tokens.
    "tinystories_bpe": dict(
        tokenizer="bpe", data_path="data/stories.txt", tokenizer_path="artifacts/tokenizer/tokenizer.json",
        out_dir="artifacts/models/tinystories_bpe", checkpoint="artifacts/models/tinystories_bpe/model.pt",
        prompt="Once upon a time"),
    # The main job, on a laptop or 2 CPU cores: Tiny Shakespeare (ships in data/), masked diffusion at the laptop
    # budget with its winners (noted above PRESETS) and a tied head; it samples with ReMDM's capped remasking;
    # MP4 + GIF.
    "cpu": dict(
        data_path="data/tinyshakespeare.txt", block_size=128, n_layer=4, n_head=4, n_embd=128, qk_norm=True,
        time_cond="none", self_cond=True, tie_weights=True,
        loss_type="all_ce", diffusion_steps=1000, mask_min=0.2, mask_max=0.8, mask_ramp=1.0, mask_ramp_from=0.5,
        batch_size=32, max_iters=2000, learning_rate=1e-3, min_lr=3e-4, warmup_iters=100,
        optimizer="muon", muon_lr=0.005, ema=0.999,
        eval_interval=250, eval_iters=10,  # 320 windows x 4 t: +- 0.005 between two evals (paired)
        out_dir="artifacts/models/cpu", checkpoint="artifacts/models/cpu/model.pt",
        prompt="ROMEO:", gen_len=96, steps=64, order="random", remask="remdm", remask_eta=0.05,
        viz_video="artifacts/media/cpu_trace.mp4"),
    # Block diffusion at the laptop budget: blocks of 4, mask rates in [0.5, 1], a 100-step chain, AdamW; it samples
    # left to right inside each block, its network's best joint.
    "cpu_bd3": dict(
        data_path="data/tinyshakespeare.txt", block_size=128, n_layer=4, n_head=4, n_embd=128,
        objective="bd3", bd3_block=4, mask_min=0.5,
        batch_size=32, max_iters=2000, learning_rate=1e-3, min_lr=1e-4, warmup_iters=100,
        eval_interval=250, eval_iters=10,
        out_dir="artifacts/models/cpu_bd3", checkpoint="artifacts/models/cpu_bd3/model.pt",
        prompt="ROMEO:", gen_len=96, steps=64, order="l2r", remask="none",
        viz_video="artifacts/media/cpu_bd3_trace.mp4"),
    # The laptop budget on char-level TinyStories: the 2,316-story excerpt that ships in data/ (data/README.md),
    # masked diffusion without time input, the CE of every position.
    "tinystories_cpu": dict(
        data_path="data/tinystories_train_head.txt", block_size=128, n_layer=4, n_head=4, n_embd=128,
        time_cond="none", loss_type="all_ce",
        batch_size=32, max_iters=2000, learning_rate=1e-3, min_lr=1e-4, warmup_iters=100,
        eval_interval=250, eval_iters=10,
        out_dir="artifacts/models/tinystories_cpu", checkpoint="artifacts/models/tinystories_cpu/model.pt",
        prompt="Once upon a time", gen_len=96, steps=64, viz_video="artifacts/media/tinystories_cpu_trace.mp4"),
    # The BPE path on a laptop: the shipped excerpt and a 2,048-token BPE trained on it (by train.py when missing), at
    # the laptop dims (1.31M parameters, ctx 128 tokens ~ 470 chars), block diffusion (blocks of 4, band [0.5, 1], the
    # clean half trained on the next token), whose block-by-block samples read as stories at this size.
    "tinystories_bpe_cpu": dict(
        tokenizer="bpe", data_path="data/tinystories_train_head.txt",
        tokenizer_path="artifacts/tokenizer/tinystories_head.json",
        block_size=128, n_layer=4, n_head=4, n_embd=128,
        objective="bd3", bd3_block=4, bd3_ar=1.0, mask_min=0.5,
        batch_size=16, max_iters=2000, learning_rate=1e-3, min_lr=1e-4, warmup_iters=100,
        eval_interval=250, eval_iters=10,
        out_dir="artifacts/models/tinystories_bpe_cpu", checkpoint="artifacts/models/tinystories_bpe_cpu/model.pt",
        prompt="Once upon a time", gen_len=96, steps=64, order="random", remask="none",
        viz_video="artifacts/media/tinystories_bpe_cpu_trace.mp4"),
    # The "speed run a 200M+ model" goal: 16 x 1024, ctx 1024, BPE on all of TinyStories (~206M parameters at a 2,048
    # vocab). 0.5M tokens per step: 16 micro-batches of 32 x 1024 on one 80 GB GPU, fewer per rank under torchrun.
    "gpt200m": dict(
        tokenizer="bpe", data_path="data/tinystories_train.txt", val_path="data/tinystories_valid.txt",
        block_size=1024, n_layer=16, n_head=16, n_embd=1024,
        batch_size=32, total_batch_size=524288, max_iters=2000, learning_rate=3e-4, min_lr=3e-5, warmup_iters=200,
        beta2=0.95, eval_interval=250, eval_iters=20, compile="true",
        out_dir="artifacts/models/gpt200m", checkpoint="artifacts/models/gpt200m/model.pt",
        prompt="Once upon a time", gen_len=256),
}
