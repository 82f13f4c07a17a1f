"""Run-level evaluation, above the objectives (it reads them through objectives.get): bound.py scores fixed windows
(the bound, or AR's exact NLL), metrics.py the sample statistics, samples.py draws and scores samples for the
scripts, report.py is train.py's end-of-run block. utils/ below never imports it (tests/test_layers.py)."""
