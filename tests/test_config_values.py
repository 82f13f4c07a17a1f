"""Every value a user can type for a config key runs or is refused in one line (issue 71, build 4): each key of
config.Config walked with the worst values of its type (nan, inf, -1, 0, a subnormal, 2^63, 2^64, '') through
train.py's parse + validate and, for the keys sampling reads, inference.py's (the command line over a checkpoint's
config, then validate). A value is accepted where ACCEPTED says it is legal, else refused with a UserError: never
another exception, and never silently. The values come in a config file, written as Python literals (a file is data:
2 ** 62 is written out, inf as 1e999); a nan comes only in a checkpoint's config (or an export's config.json), walked
through checkpoint_manager.checkpoint_config. Paths are checked where they are read (tests/test_bad_input.py's rows).
python -m pytest -q tests/test_config_values.py"""
import math
from dataclasses import fields

import pytest

import configurator
from config import NEEDS, SAMPLED, SAMPLING_ONLY, Config
from configurator import TYPES, parse, validate
from utils.errors import UserError
from objectives import OBJECTIVES

WORST = {float: ["float('inf')", "-float('inf')", "-1.0", "0.0", "1e-320", "2.0 ** 64"],
         int: ["-1", "0", "2 ** 62", "2 ** 63", "2 ** 64", "-2 ** 63 - 1"], str: ["''", "'nonsense'"], bool: [],
         "tristate": ["''", "'nonsense'", "2 ** 64", "True"]}
# what makes a key act (config.NEEDS): given alone it would be refused for that, whatever its value
WITH = dict(tokenizer_path="--tokenizer=bpe", mask_ramp_from="--mask_ramp=0.5", muon_lr="--optimizer=muon",
            muon_momentum="--optimizer=muon", wandb_project="--wandb_log", remask_eta="--remask=remdm",
            trace_every="--viz_video=v.mp4", gif_frame_ms="--viz_video=v.mp4")
# The worst values each key accepts, each legal: a path is checked where it is read (''= none for the optional ones);
# 0 is 'off' or a legal rate; a subnormal or 2^64 is a legal rate, weight or temperature (a run that then diverges
# stops in one line, naming the step); 2^62 is a count the program only compares or loops to, or a seed.
ACCEPTED = dict(
    data_path=("'nonsense'",), val_path=("''", "'nonsense'"), val_fraction=("1e-320",), tokenizer_path=("'nonsense'",),
    dropout=("0.0", "1e-320"), mask_min=("0.0", "1e-320"), mask_ramp=("0.0", "1e-320"),
    bd3_ar=("0.0", "1e-320", "2.0 ** 64"), dual_ar=("0.0",), max_iters=("0", "2 ** 62"), data_steps=("0", "2 ** 62"),
    # (the LR's peak below the default floor 3e-5, or x weight_decay 0.1 >= 1, is refused: check_optimisation)
    learning_rate=(), min_lr=("0.0", "1e-320"), warmup_iters=("0", "2 ** 62"),
    weight_decay=("0.0", "1e-320"), beta1=("0.0", "1e-320"), beta2=("0.0", "1e-320"),
    grad_clip=("0.0", "1e-320", "2.0 ** 64"), total_batch_size=("0", "2 ** 62"), muon_lr=("1e-320", "2.0 ** 64"),
    muon_momentum=("0.0", "1e-320"), ema=("0.0", "1e-320"), eval_interval=("2 ** 62",), eval_iters=("2 ** 62",),
    log_interval=("2 ** 62",), out_dir=("'nonsense'",), init_from=("''", "'nonsense'"), keep_last=("2 ** 62",),
    skip_nonfinite=("0", "2 ** 62"), checkpoint=("'nonsense'",), prompt=("''", "'nonsense'"),
    temperature=("0.0", "2.0 ** 64"), temperature_end_share=("0.0", "1e-320"), top_k=("0", "2 ** 62"),
    top_p=("1e-320",), viz_video=(), html=("''",), trace_every=("2 ** 62",), infill=("''", "'nonsense'"),
    prefix_file=("''", "'nonsense'"), suffix_file=("''", "'nonsense'"), remask_eta=("0.0", "1e-320"),
    threshold=("0.0", "1e-320"), entropy_bound=("0.0", "1e-320", "2.0 ** 64"), semi_ar_length=("0", "2 ** 62"), prompts_file=("''", "'nonsense'"),
    seed=("0", "2 ** 62"), compile=("True",))
def worst(key):
    return WORST["tristate" if key == "compile" else TYPES[key]]


CASES = [(key, value) for key in TYPES for value in worst(key)]


def _objective(key):
    """An objective that reads key (the others refuse it, given, whatever its value)."""
    return next(name for name in OBJECTIVES if key not in OBJECTIVES[name].IGNORES)


def _given(key, value, tmp_path):
    """argv setting key = value (a Python expression) in a config file, with what makes the key act."""
    f = tmp_path / "values.py"
    v = eval(value)
    f.write_text(f"{key} = {'1e999' if v == math.inf else '-1e999' if v == -math.inf else repr(v)}\n")
    objective = [] if key == "objective" else [f"--objective={_objective(key)}"]
    return [*objective, *([WITH[key]] if key in WITH else []), str(f)]


def _outcome(check):
    """'accepted', or 'refused' for a UserError; any other exception fails the test where it is raised."""
    try:
        check()
    except UserError:
        return "refused"
    return "accepted"


@pytest.mark.parametrize("key, value", CASES, ids=[f"{k}={v}" for k, v in CASES])
def test_train_takes_or_refuses_every_value_in_one_line(key, value, tmp_path):
    """train.py's parse: a key only inference.py reads (config.SAMPLING_ONLY) is refused whatever its value."""
    outcome = _outcome(lambda: parse(_given(key, value, tmp_path)))
    assert outcome == ("accepted" if value in ACCEPTED.get(key, ()) and key not in SAMPLING_ONLY else "refused")


SAMPLED_CASES = [(key, value) for key, value in CASES if key in SAMPLED]


@pytest.mark.parametrize("key, value", SAMPLED_CASES, ids=[f"{k}={v}" for k, v in SAMPLED_CASES])
def test_inference_takes_or_refuses_every_value_it_reads_in_one_line(key, value, tmp_path):
    """inference.load's reading: the command line over the checkpoint's config (here the defaults), then validate."""
    def check():
        cfg, flags = parse(_given(key, value, tmp_path), base=Config(), check=False)
        validate(cfg, flags, training=False)
    assert _outcome(check) == ("accepted" if value in ACCEPTED.get(key, ()) else "refused")


def test_every_key_is_walked_and_every_accepted_value_is_one_it_is_given():
    assert {f.name for f in fields(Config)} == set(TYPES) and set(WITH) <= set(NEEDS)
    assert all(value in worst(key) for key, values in ACCEPTED.items() for value in values)
