"""All hyperparameters in one typed block, and the presets: the file to edit. It imports nothing
from the project. Defaults: the reference micro-dLLM (char-level, 6/6/384, ctx 256, T=100).
Later layers win; configurator.py parses them and refuses unknown keys and wrong types:

    python train.py                                   # defaults
    python train.py cpu                               # a named preset (see PRESETS)
    python train.py my_experiment.py                  # `key = value` lines, each value a literal
    python train.py cpu --max_iters=200 --device cpu  # --key=value or --key value
    python train.py --resume                          # bare --flag sets a bool to True

Below the block: each key's role (TRAINED, RESUMABLE, SAMPLED), its values (CHOICES), its limits.
Comments are for the reader and --help only.
"""
from dataclasses import dataclass


@dataclass
class Config:
    # ---- data
    data_path: str = "data/tinyshakespeare.txt"  # text file; make one with scripts/data.py
    val_path: str = ""                  # validation text; "" = the last val_fraction of data_path
    val_fraction: float = 0.1           # nanoGPT's split: the last 10% validates
    tokenizer: str = "char"             # 'char' (the data's characters + [MASK]) | 'bpe'
    tokenizer_path: str = "artifacts/tokenizer/tokenizer.json"  # bpe only (scripts/train_tokenizer.py)
    # ---- model
    block_size: int = 256               # context length in tokens
    n_layer: int = 6                    # transformer blocks
    n_head: int = 6                     # attention heads per block
    n_embd: int = 384                   # model width (head_dim = n_embd / n_head)
    time_cond: str = "learned"          # 'learned' Embedding(T+1, d) on the input
                                        #   | 'adaln' (DiT adaLN-Zero) | 'none'
    dropout: float = 0.0                # training only: embeddings, attention, MLP output
    qk_norm: bool = False               # RMSNorm on queries and keys after RoPE (nanochat)
    self_cond: bool = False             # mdlm, bd3: a second pass reads the first's predicted x0
                                        #   (Chen et al. 2022)
    tie_weights: bool = False           # the output head is the token embedding (nanoGPT)
    # ---- objective
    objective: str = "mdlm"             # 'mdlm' masked diffusion | 'uniform' uniform-state diffusion
                                        #   | 'ar' the same net, causal | 'bd3' block diffusion
    bd3_block: int = 4                  # bd3: tokens per block, divides block_size; 1 = AR, block_size = MDLM
    mask_min: float = 0.0               # mdlm/bd3 training: lowest mask rate drawn (BD3-LM, e.g. 0.3);
                                        #   eval: every rate
    mask_max: float = 1.0               # mdlm/bd3 training: the highest mask rate drawn (e.g. 0.8)
    mask_ramp: float = 0.0              # mdlm training: share of the run the top rate rises over (Quokka); 0 = off
    mask_ramp_from: float = 0.5         # the top rate at step 0 (with mask_ramp)
    bd3_loss: str = "elbo"              # bd3 training: 'elbo' its NELBO | 'all_ce' plain CE
    bd3_ar: float = 0.0                 # bd3: weight of a next-token loss on the clean half (then causal); 0 = off
    dual_ar: float = 0.0                # mdlm: weight of a causal next-token loss on the clean window
                                        #   (Samuel & Charpentier 2025); 0 = off
    diffusion_steps: int = 100          # T, the forward process's discrete steps (at most 1,000,000)
    schedule: str = "cosine"            # alpha(t): 'cosine' cos(pi/2 t/T) | 'linear' 1-t/T
    loss_type: str = "elbo"             # 'elbo' NELBO | plain CE: 'masked_ce' | 'all_ce'
    mask_draws: int = 1                 # mdlm/bd3 training: masks (and times) of each window a step, a pass each
    # ---- optimisation
    batch_size: int = 64                # sequences per step
    max_iters: int = 5000               # 0 = print config and parameter count, exit
    data_steps: int = 0                 # > 0: step i trains on batch i % data_steps (repeats the data)
    learning_rate: float = 3e-4         # peak AdamW LR
    min_lr: float = 3e-5                # the cosine decay's floor (LR / 10, as nanoGPT)
    warmup_iters: int = 100             # linear warm-up steps
    weight_decay: float = 0.1           # on 2-D weights only
    beta1: float = 0.9                  # AdamW's first-moment decay
    beta2: float = 0.99                 # 0.99: small batches (nanoGPT char recipe)
    grad_clip: float = 1.0              # 0 disables
    total_batch_size: int = 0           # tokens a step, all ranks; 0 = batch_size*block_size*world;
                                        #   more = accumulate
    optimizer: str = "adamw"            # 'adamw' | 'muon' (on the layers' 2-D weights)
    muon_lr: float = 0.02               # peak Muon LR (learning_rate's schedule)
    muon_momentum: float = 0.95         # Muon's Nesterov momentum
    ema: float = 0.0                    # 0 = off; else the decay (e.g. 0.999) of a weight average
                                        #   for eval and samples
    activation_checkpointing: bool = False  # recompute each layer in backward:
                                        #   ~1/n_layer of the activations, 4/3 the compute
    # ---- eval, logging, checkpoints
    eval_interval: int = 250            # steps between validation passes
    eval_iters: int = 20                # validation batches per pass, the same each time
    log_interval: int = 10              # steps between log lines
    out_dir: str = "artifacts/models"   # model.pt (latest/final) and best.pt land here
    resume: bool = False                # continue from out_dir/model.pt (step, optimizer, LR schedule)
    init_from: str = ""                 # a model.pt's (or export's) weights to start from:
                                        #   AR -> mdlm/bd3, mdlm -> bd3
    distill_from: str = ""              # a trained mdlm (model.pt or export) to distil
                                        #   (distill.py): the student learns in a pass its 3
    distill_steps: int = 16             # with distill_from: the student's passes S (the teacher's: 3 S)
    overwrite: bool = False             # allow replacing an earlier run's checkpoints,
                                        #   metrics.jsonl, trace (inference.py: --viz-video's files)
    keep_last: int = 2                  # the newest K checkpoints kept;
                                        #   1 = model.pt and best.pt only, else also model_<iter>.pt
    skip_nonfinite: int = 0             # NaN/inf steps skipped before training stops (> 0: a host sync a step)
    # ---- sampling (inference.py, and training's end-of-run samples)
    checkpoint: str = "artifacts/models/model.pt"  # the model.pt (or exported folder) to sample from
    prompt: str = ""                    # text the sample must start with
    gen_len: int = 256                  # tokens to generate after the prompt
    steps: int = 100                    # reverse steps (NFE), <= diffusion_steps; bd3: per block,
                                        #   at most its length
    temperature: float = 1.0            # 0 = argmax, else >= 1e-6; sampled in float64
    temperature_end_share: float = 1.0  # mdlm, bd3: the temperature falls as the block fills,
                                        #   to temperature * this (1 = constant)
    top_k: int = 0                      # 0 = off
    top_p: float = 1.0                  # 1.0 = off
    num_samples: int = 1                # samples drawn in one batch
    html: str = ""                      # the trace as one HTML page to scrub (a slider, play,
                                        #   each position's top 5): a path ending in .html, or
                                        #   'auto' (a bare --html): a new page in artifacts/media/
    viz_video: str = "auto"             # the denoising trace's MP4 (a GIF beside it): 'auto',
                                        #   a new file in artifacts/media/ named by the run; a
                                        #   path ending in .mp4; or 'off'
    trace_every: int = 1                # record one frame every N steps
    gif_frame_ms: int = 180             # frame duration (10 to 655,350: a GIF's hundredths of a second)
    infill: str = ""                    # text with blanks: [___] one token per marker character,
                                        #   [___:N] N tokens
    prefix_file: str = ""               # the sample starts with this file's text (not --prompt)
    suffix_file: str = ""               # the sample ends with this file's text; gen_len tokens between
    order: str = "confidence"           # reveal first: 'confidence' | 'margin' (top1 - top2)
                                        #   | 'entropy' (low first) | 'random' | 'l2r' (leftmost)
    tokens_per_step: str = "schedule"   # reveals per step: 'schedule' (1 - alpha(t))
                                        #   | 'linear' (LLaDA) | 'cosine' (MaskGIT)
    remask: str = "refine"              # 'refine' (reference) | 'none' (LLaDA: committed tokens final)
                                        #   | 'remdm' (ReMDM)
    remask_eta: float = 0.02            # remdm: eta, a committed token's re-mask probability
                                        #   min(eta, sigma_max)
    threshold: float = 0.0              # Fast-dLLM: commit every position with confidence > this,
                                        #   >= 1 a step; 0 = off
    entropy_bound: float = 0.0          # EB-Sampler: reveal, in --order, the most [MASK]s whose entropies'
                                        #   sum minus max <= this (nats), >= 1 a step; 0 = off
    semi_ar_length: int = 0             # decode left to right this many tokens at a time, past block_size;
                                        #   0 = off
    bd3_speculate: bool = False         # bd3, --bd3_ar nets: sample the clean half's AR exactly,
                                        #   the noisy half drafting
    dual_sample: bool = False           # mdlm, --dual_ar nets: exact samples of its AR mode (KV-cached);
                                        #   prompts only
    replay_steps: int = 4               # KV-cached decoding: tokens (bd3 at batch 1: drafting rounds)
                                        #   between two host reads, one CUDA graph replay under
                                        #   --compile; the samples do not depend on it
    live: bool = False                  # redraw the canvas in the terminal
    prompts_file: str = ""              # sample once per non-blank line of this file
    interactive: bool = False           # read prompts from stdin until Ctrl-D
    serve: bool = False                 # a local web page: type a prompt, watch the canvas fill a step a
                                        #   frame beside a second lane (--race); it writes no file
    host: str = "127.0.0.1"             # --serve's address: 127.0.0.1 = this machine only, 0.0.0.0 = all
    port: int = 8000                    # --serve's port; 0 = any free one (the start-up line names it)
    race: str = "auto"                  # --serve's second lane: 'auto' (the baby AR; baby_bd3 beside
                                        #   an AR), a checkpoint on the same text, or 'off'
    # ---- system
    device: str = "auto"                # 'auto' (cuda -> mps -> cpu) | 'cpu' | 'cuda' | 'cuda:1' | 'mps'
    dtype: str = "auto"                 # 'auto': bf16 autocast on CUDA, fp16 + GradScaler on a
                                        #   GPU without bf16, fp32 elsewhere
    compile: str = "auto"               # 'auto' (compile the training and decode steps on CUDA;
                                        #   eager on a CPU, where the records were trained) | 'true'
                                        #   (bare --compile: faster on a CPU too) | 'false'
    seed: int = 1337                    # the random seed (>= 0): initialisation, data order, noise, samples
    wandb_log: bool = False             # also log to Weights & Biases (pip install wandb)
    wandb_project: str = "micro-dllm"   # the Weights & Biases project (with wandb_log)


# Each key's role. Trained: a setting of the trained model or its data, which sampling takes from
# the checkpoint. Resumable: a resumed run may change it (the rest come from its checkpoint).
# Sampled: inference.py takes it from its command line, as it does every key of the sampler
# (diffusion.SamplerOptions, whose fields are the sampler's keys); sampling only: train.py
# refuses it.
TRAINED = ("data_path", "val_path", "tokenizer", "block_size", "n_layer", "n_head", "n_embd", "time_cond", "qk_norm",
           "self_cond", "tie_weights", "objective", "bd3_block", "bd3_ar", "dual_ar", "diffusion_steps", "schedule")
RESUMABLE = ("max_iters", "activation_checkpointing", "eval_interval", "eval_iters", "log_interval", "out_dir",
             "resume", "overwrite", "keep_last", "skip_nonfinite", "device", "compile", "wandb_log", "wandb_project")
SAMPLING_ONLY = ("checkpoint", "html", "infill", "prefix_file", "suffix_file", "live", "prompts_file", "interactive",
                 "serve", "host", "port", "race")
SAMPLED = (*SAMPLING_ONLY, "overwrite", "prompt", "gen_len", "num_samples", "viz_video", "trace_every", "gif_frame_ms",
           "device", "dtype", "compile", "seed")

# The values a key takes; the modules that implement them check against these.
CHOICES = dict(
    tokenizer=("char", "bpe"), time_cond=("learned", "adaln", "none"), objective=("mdlm", "uniform", "ar", "bd3"),
    bd3_loss=("elbo", "all_ce"), schedule=("cosine", "linear"), loss_type=("elbo", "masked_ce", "all_ce"),
    optimizer=("adamw", "muon"), order=("confidence", "margin", "entropy", "random", "l2r"),
    tokens_per_step=("schedule", "linear", "cosine"), remask=("refine", "none", "remdm"),
    dtype=("auto", "float32", "bfloat16", "float16"), compile=("auto", "true", "false"))
UNSCORED_ORDERS = ("random", "l2r")  # orders no model score ranks: no threshold or entropy bound

# A key that acts only with another: {key: (that key, the values it acts with; None: any but off,
# which is False, 0, '' or 'off')}, or a tuple of such pairs (any one will do). Given alone,
# validation refuses it. (The sampler's keys: diffusion.SamplerOptions.unread says which its own
# switches leave unread.)
NEEDS = dict(
    val_fraction=("val_path", ("",)), tokenizer_path=("tokenizer", ("bpe",)), mask_ramp_from=("mask_ramp", None),
    muon_lr=("optimizer", ("muon",)), muon_momentum=("optimizer", ("muon",)),
    init_from=("resume", (False,)), overwrite=("resume", (False,)), wandb_project=("wandb_log", None),
    distill_steps=("distill_from", None),
    trace_every=("viz_video", None), gif_frame_ms=(("viz_video", None), ("html", None)), host=("serve", None),
    port=("serve", None), race=("serve", None))
# The most a size or count may be: past it a 64-bit size overflows, or a loop builds for minutes.
# Memory decides below (train.py refuses a run that won't fit); 2^31 keeps products in int64.
INT64_MAX = 2 ** 63 - 1  # the largest tensor size or index
SIZE = "past any machine's memory: torch's 64-bit size of what it sizes would overflow first"
LIMITS = dict(
    block_size=(2**31 - 1, SIZE), batch_size=(2**31 - 1, SIZE), mask_draws=(2**31 - 1, SIZE),
    num_samples=(2**31 - 1, SIZE), n_embd=(2**20, SIZE), gen_len=(2**24, "the canvas is laid out token by token"),
    # ~1.5 ms and 0.1 MB a layer before its weights (torch 2.13): 2^20 layers build for half an hour
    n_layer=(4096, "each layer is a module built one by one: far past any network that trains"),
    # 1 - alpha(1) = 1 - cos(pi / 2T) in float64: off 1.7e-5 at T = 1e6, 0.1% at 1e7, 0 (NaN) at 1e9
    diffusion_steps=(10**6, "past it float64 cannot tell the chain's first steps apart"),
    gif_frame_ms=(655_350, "a GIF times a frame in hundredths of a second, in 16 bits"),
    replay_steps=(64, "each step is written out in the compiled replay, whose compile time grows with them"))

# The range of each number, in interval notation; a value outside is refused with the line beside it
# ({key} and {value}, or any key's name, fill it in), else "KEY must be >= LOW, got VALUE". One
# validation pass reads it (configurator.validate), in this order, after CHOICES and LIMITS.
AT_LEAST_1 = "[1, inf)"
AT_LEAST_0 = "[0, inf)"
RANGES = dict(
    block_size=AT_LEAST_1, n_layer=AT_LEAST_1, n_head=AT_LEAST_1, n_embd=AT_LEAST_1, diffusion_steps=AT_LEAST_1,
    batch_size=AT_LEAST_1, eval_interval=AT_LEAST_1, eval_iters=AT_LEAST_1, log_interval=AT_LEAST_1,
    gen_len=AT_LEAST_1, steps=AT_LEAST_1, num_samples=AT_LEAST_1, trace_every=AT_LEAST_1, replay_steps=AT_LEAST_1,
    distill_steps=AT_LEAST_1,
    max_iters=AT_LEAST_0, semi_ar_length=AT_LEAST_0, weight_decay=AT_LEAST_0, grad_clip=AT_LEAST_0,
    warmup_iters=AT_LEAST_0, seed=AT_LEAST_0,
    gif_frame_ms=("[10, inf)", "gif_frame_ms must be >= 10 (a GIF times its frames in hundredths of a second), got "
                               "{value}"),
    data_steps=(AT_LEAST_0, "data_steps must be >= 0 (0: a new batch every step), got {value}"),
    keep_last=(AT_LEAST_1, "keep_last must be >= 1 and skip_nonfinite >= 0; got {keep_last}, {skip_nonfinite}"),
    skip_nonfinite=(AT_LEAST_0, "keep_last must be >= 1 and skip_nonfinite >= 0; got {keep_last}, {skip_nonfinite}"),
    val_fraction=("(0, 1)", "val_fraction must be in (0, 1), got {value}"),
    learning_rate=("(0, inf)", "learning_rate must be > 0 and min_lr >= 0"),
    min_lr=(AT_LEAST_0, "learning_rate must be > 0 and min_lr >= 0"),
    beta1=("[0, 1)", "beta1 and beta2 are AdamW's decays in [0, 1), got {beta1}, {beta2}"),
    beta2=("[0, 1)", "beta1 and beta2 are AdamW's decays in [0, 1), got {beta1}, {beta2}"),
    muon_lr=("(0, inf)", "muon_lr must be > 0 and muon_momentum in [0, 1), got {muon_lr}, {muon_momentum}"),
    muon_momentum=("[0, 1)", "muon_lr must be > 0 and muon_momentum in [0, 1), got {muon_lr}, {muon_momentum}"),
    dropout=("[0, 1)", "dropout must be a probability in [0, 1), e.g. 0.2 (nanoGPT's shakespeare_char); got {value}"),
    ema=("[0, 1)", "ema must be 0 (off) or a decay in (0, 1) such as 0.999, got {value}"),
    temperature=(AT_LEAST_0, "temperature must be >= 0 (0 = argmax), got {value}"),
    top_k=(AT_LEAST_0, "top_k must be >= 1, or 0 to turn it off; got {value}"),
    top_p=("(0, 1]", "top_p must be in (0, 1], got {value}"),
    threshold=("[0, 1]", "threshold must be in (0, 1] (a confidence), or 0 to turn it off; got {value}"),
    remask_eta=("[0, 1]", "remask_eta must be a probability in [0, 1], got {value}"),
    entropy_bound=(AT_LEAST_0, "entropy_bound is a budget in nats, >= 0 (0 = off; e.g. 0.5), got {value}"),
    # a draw's temperature is T (s + (1 - s) f) at the masked share f (diffusion.step_temperature):
    # past s = 1e6 float64 can round its start (f = 1) to 0
    temperature_end_share=("[0, 1e6]", "temperature_end_share is the share of --temperature the last draws keep: "
                                       "give a number in [0, 1e6] (1 = constant, 0.5 = half) whose product with it is "
                                       "finite, got {value}"),
    port=("[0, 65535]", "--port {value} is no TCP port: give one from 1 to 65535, or 0 for any free one"),
)

# The words a bool flag takes (bool('false') is True): --live=off, --compile=yes.
BOOLEANS = {"1": True, "true": True, "yes": True, "on": True, "0": False, "false": False, "no": False, "off": False}

# The presets: one flat literal each, every key it sets (as nanoGPT's config/*.py); the comment
# above each is its --help line. How each setting won: dev/LOG.md. Budgets: baby is nanoGPT's
# "baby" CPU config (4/4/128, ctx 64, 12 x 2,000 steps), laptop 4/4/128, ctx 128, 32 x 2,000. The
# winners at both: QK-norm, Muon (0.005) with a weight EMA, an LR floor at 30 % of the peak; for
# masked diffusion no time input, all-position CE, mask rates in [0.2, 0.8] (the top rising from
# 0.5), self-conditioning, a 1,000-step chain. At baby: Muon's momentum 0.9, no weight decay.
PRESETS = {
    # Masked diffusion at nanoGPT's baby budget, its best recipe: QK-norm, Muon and a weight EMA,
    # no time input, all-position CE, mask rates in [0.2, 0.8], self-conditioning, the dual
    # objective, four masks a window. Its AR: --objective=ar --min_lr=1e-4 --muon_momentum=0.95
    # --weight_decay=0.1.
    "baby": dict(
        data_path="data/tinyshakespeare.txt", block_size=64, n_layer=4, n_head=4, n_embd=128, qk_norm=True,
        time_cond="none", self_cond=True,
        loss_type="all_ce", diffusion_steps=1000, mask_min=0.2, mask_max=0.8, mask_ramp=1.0, mask_ramp_from=0.5,
        dual_ar=0.25, mask_draws=4,
        batch_size=12, max_iters=2000, learning_rate=1e-3, min_lr=3e-4, warmup_iters=100, weight_decay=0.0,
        optimizer="muon", muon_lr=0.005, muon_momentum=0.9, ema=0.999,
        eval_interval=500, eval_iters=10, log_interval=100,  # 120 windows x 4 t: +- 0.005 between evals
        out_dir="artifacts/models/baby", checkpoint="artifacts/models/baby/model.pt",
        prompt="ROMEO:", gen_len=48, steps=48, order="random", remask="none", temperature=1.0,
        temperature_end_share=0.1),
    # baby distilled (distill.py, SDTT): the student learns in one pass what baby does in three,
    # over every mask rate, four draws of the teacher's passes averaged a state; it samples baby's
    # way in 16 passes. Its teacher: the shipped baby weights (yours:
    # --distill_from=artifacts/models/baby/model.pt).
    "baby_fast": dict(
        data_path="data/tinyshakespeare.txt", block_size=64, n_layer=4, n_head=4, n_embd=128, qk_norm=True,
        time_cond="none", self_cond=True, diffusion_steps=1000, dual_ar=0.25, mask_draws=2,
        distill_from="artifacts/weights/baby", distill_steps=16,
        batch_size=12, max_iters=1000, learning_rate=1e-4, min_lr=3e-5, warmup_iters=50, weight_decay=0.0,
        optimizer="muon", muon_lr=5e-4, muon_momentum=0.9, ema=0.99,
        eval_interval=250, eval_iters=10, log_interval=50,
        out_dir="artifacts/models/baby_fast", checkpoint="artifacts/models/baby_fast/model.pt",
        prompt="ROMEO:", gen_len=48, steps=16, order="random", remask="none", temperature=1.0,
        temperature_end_share=0.1),
    # The best diffusion at the baby budget: blocks of 4, mask rates in [0.3, 1], plain CE, the
    # clean half on the next token, two masks a window, a tied head; it samples the clean half's AR,
    # the noisy half drafting (--bd3_speculate=false: left to right).
    "baby_bd3": dict(
        data_path="data/tinyshakespeare.txt", block_size=64, n_layer=4, n_head=4, n_embd=128, qk_norm=True,
        self_cond=True, tie_weights=True,
        objective="bd3", bd3_block=4, bd3_loss="all_ce", bd3_ar=1.0, diffusion_steps=1000, mask_min=0.3, mask_draws=2,
        batch_size=12, max_iters=2000, learning_rate=1e-3, min_lr=3e-4, warmup_iters=100, weight_decay=0.0,
        optimizer="muon", muon_lr=0.005, muon_momentum=0.9, ema=0.999,
        eval_interval=500, eval_iters=10, log_interval=100,
        out_dir="artifacts/models/baby_bd3", checkpoint="artifacts/models/baby_bd3/model.pt",
        prompt="ROMEO:", gen_len=48, steps=48, order="l2r", remask="none", bd3_speculate=True),
    # nanoGPT's train_shakespeare_char, diffusion flavour: the defaults (a GPU job).
    "shakespeare_char": dict(data_path="data/tinyshakespeare.txt", out_dir="artifacts/models/shakespeare_char",
                             checkpoint="artifacts/models/shakespeare_char/model.pt"),
    # TinyStories at character level, validated on its valid file.
    "tinystories_char": dict(data_path="data/tinystories_train.txt", val_path="data/tinystories_valid.txt",
                             out_dir="artifacts/models/tinystories_char",
                             checkpoint="artifacts/models/tinystories_char/model.pt", prompt="Once upon a time"),
    # The reference BPE recipe: 10k TinyStories (scripts/data.py), a 2,048-token BPE
    # (scripts/train_tokenizer.py), 12,228,480 parameters; --gen-len counts BPE tokens.
    "tinystories_bpe": dict(
        tokenizer="bpe", data_path="data/stories.txt", tokenizer_path="artifacts/tokenizer/tokenizer.json",
        out_dir="artifacts/models/tinystories_bpe", checkpoint="artifacts/models/tinystories_bpe/model.pt",
        prompt="Once upon a time"),
    # The main job, on a laptop or 2 CPU cores: masked diffusion of Tiny Shakespeare at the laptop
    # budget. QK-norm, Muon and a weight EMA, no time input, all-position CE, mask rates in
    # [0.2, 0.8], self-conditioning, a tied head; it samples with ReMDM's capped remasking.
    "cpu": dict(
        data_path="data/tinyshakespeare.txt", block_size=128, n_layer=4, n_head=4, n_embd=128, qk_norm=True,
        time_cond="none", self_cond=True, tie_weights=True,
        loss_type="all_ce", diffusion_steps=1000, mask_min=0.2, mask_max=0.8, mask_ramp=1.0, mask_ramp_from=0.5,
        batch_size=32, max_iters=2000, learning_rate=1e-3, min_lr=3e-4, warmup_iters=100,
        optimizer="muon", muon_lr=0.005, ema=0.999,
        eval_interval=250, eval_iters=10,  # 320 windows x 4 t: +- 0.005 between evals
        out_dir="artifacts/models/cpu", checkpoint="artifacts/models/cpu/model.pt",
        prompt="ROMEO:", gen_len=96, steps=64, order="random", remask="remdm", remask_eta=0.05),
    # Block diffusion at the laptop budget: blocks of 4, mask rates in [0.5, 1], 100 steps, AdamW;
    # it samples left to right in each block.
    "cpu_bd3": dict(
        data_path="data/tinyshakespeare.txt", block_size=128, n_layer=4, n_head=4, n_embd=128,
        objective="bd3", bd3_block=4, mask_min=0.5,
        batch_size=32, max_iters=2000, learning_rate=1e-3, min_lr=1e-4, warmup_iters=100,
        eval_interval=250, eval_iters=10,
        out_dir="artifacts/models/cpu_bd3", checkpoint="artifacts/models/cpu_bd3/model.pt",
        prompt="ROMEO:", gen_len=96, steps=64, order="l2r", remask="none"),
    # Char-level TinyStories (the excerpt in data/) at the laptop budget: masked diffusion, no time
    # input, all-position CE.
    "tinystories_cpu": dict(
        data_path="data/tinystories_train_head.txt", block_size=128, n_layer=4, n_head=4, n_embd=128,
        time_cond="none", loss_type="all_ce",
        batch_size=32, max_iters=2000, learning_rate=1e-3, min_lr=1e-4, warmup_iters=100,
        eval_interval=250, eval_iters=10,
        out_dir="artifacts/models/tinystories_cpu", checkpoint="artifacts/models/tinystories_cpu/model.pt",
        prompt="Once upon a time", gen_len=96, steps=64),
    # The BPE path on a laptop: the shipped excerpt, a 2,048-token BPE (trained if missing), block
    # diffusion (blocks of 4, band [0.5, 1], the clean half on the next token), 1.31M parameters.
    "tinystories_bpe_cpu": dict(
        tokenizer="bpe", data_path="data/tinystories_train_head.txt",
        tokenizer_path="artifacts/tokenizer/tinystories_head.json",
        block_size=128, n_layer=4, n_head=4, n_embd=128,
        objective="bd3", bd3_block=4, bd3_ar=1.0, mask_min=0.5,
        batch_size=16, max_iters=2000, learning_rate=1e-3, min_lr=1e-4, warmup_iters=100,
        eval_interval=250, eval_iters=10,
        out_dir="artifacts/models/tinystories_bpe_cpu", checkpoint="artifacts/models/tinystories_bpe_cpu/model.pt",
        prompt="Once upon a time", gen_len=96, steps=64, order="random", remask="none"),
    # A 200M-parameter GPU run: 16 x 1024, ctx 1024, BPE on all of TinyStories (~206M parameters),
    # 0.5M tokens a step (16 micro-batches of 32 x 1024 on one 80 GB GPU).
    "gpt200m": dict(
        tokenizer="bpe", data_path="data/tinystories_train.txt", val_path="data/tinystories_valid.txt",
        block_size=1024, n_layer=16, n_head=16, n_embd=1024,
        batch_size=32, total_batch_size=524288, max_iters=2000, learning_rate=3e-4, min_lr=3e-5, warmup_iters=200,
        beta2=0.95, eval_interval=250, eval_iters=20, compile="true",
        out_dir="artifacts/models/gpt200m", checkpoint="artifacts/models/gpt200m/model.pt",
        prompt="Once upon a time", gen_len=256),
}
