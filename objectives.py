"""The objectives by config.py's name (--objective), each on diffusion.Objective's contract: the
entry scripts find a config's objective here and call its methods, never asking which it is.

    python -c "from objectives import OBJECTIVES; print(OBJECTIVES['bd3'].describe.__doc__)"
"""
from ar import AutoRegressive
from bd3 import BlockDiffusion
from diffusion import MaskedDiffusion
from uniform import UniformDiffusion

OBJECTIVES = dict(mdlm=MaskedDiffusion(), uniform=UniformDiffusion(), ar=AutoRegressive(), bd3=BlockDiffusion())

# Their type, for the one annotation that holds a run's objective (train.py's Run): an editor's
# go-to-definition from a call on it lands on each objective's method, not only on the contract's.
AnyObjective = MaskedDiffusion | UniformDiffusion | AutoRegressive | BlockDiffusion
