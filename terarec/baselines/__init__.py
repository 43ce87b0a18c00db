"""Non-deep baselines (LightGBM, logistic regression) on a prepared dataset, scored with the
trainer's own metric code so their numbers compare with the models' (``terarec compare``)."""
