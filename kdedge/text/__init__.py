"""Labelled texts in, features out: reading data, folds and splits, segmentation, word vectors."""
