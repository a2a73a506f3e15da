"""Classic baselines on the same splits: TF-IDF (words + char n-grams) + one-vs-rest LR, and fastText ova."""
from __future__ import annotations

import os
import tempfile

import numpy as np


def lexical_tokens(cfg, texts: dict[str, list[str]]) -> dict[str, list[list[str]]]:
    """Word tokens of each split's texts for the classic models: the run's segmenter, jieba for a char run.

    The classic models' features are word + character n-grams by definition, so a character-level run
    still gives them words (with the run's script conversion).
    """
    from kdedge.text.segment import Segmenter, resolve_convert

    convert = resolve_convert(cfg.convert, texts["train"])
    seg = Segmenter("jieba" if cfg.segmenter == "char" else cfg.segmenter, convert, cfg.jieba_hmm, cfg.ckip_model)
    return {name: seg.segment(split_texts)["tokens"] for name, split_texts in texts.items()}


def tfidf_lr(train_tokens, y_train, other_tokens: dict, c: float = 8.0, seed: int = 0) -> dict:
    """Fit on the training token lists; return {split: probabilities} for `other_tokens`' splits."""
    from scipy.sparse import hstack
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    join = lambda docs: [" ".join(toks) for toks in docs]  # noqa: E731 - tiny local adapter
    words = TfidfVectorizer(tokenizer=str.split, token_pattern=None, lowercase=False, sublinear_tf=True,
                            ngram_range=(1, 2), min_df=1)
    chars = TfidfVectorizer(analyzer="char", ngram_range=(1, 3), sublinear_tf=True, min_df=2)
    train_docs = join(train_tokens)
    x_train = hstack([words.fit_transform(train_docs), chars.fit_transform([d.replace(" ", "") for d in train_docs])])
    out = {}
    models = []
    for j in range(y_train.shape[1]):
        if y_train[:, j].min() == y_train[:, j].max():
            models.append(float(y_train[0, j]))
            continue
        models.append(LogisticRegression(C=c, max_iter=2000, solver="liblinear", random_state=seed)
                      .fit(x_train, y_train[:, j]))
    for split, toks in other_tokens.items():
        docs = join(toks)
        x = hstack([words.transform(docs), chars.transform([d.replace(" ", "") for d in docs])])
        out[split] = np.stack([np.full(x.shape[0], m) if isinstance(m, float) else m.predict_proba(x)[:, 1]
                               for m in models], axis=1)
    return out


def fasttext_ova(train_tokens, y_train, label_names, other_tokens: dict, seed: int = 0, epochs: int = 25,
                 dim: int = 100) -> dict:
    """fastText supervised with `loss=ova` (one-vs-all), word bigrams; {split: probabilities}."""
    import fasttext

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "train.txt")
        with open(path, "w", encoding="utf-8") as f:
            for toks, row in zip(train_tokens, y_train):
                labels = " ".join(f"__label__{i}" for i in np.flatnonzero(row))
                f.write(f"{labels} {' '.join(toks)}\n")
        model = fasttext.train_supervised(path, loss="ova", epoch=epochs, dim=dim, wordNgrams=2, lr=0.5,
                                          seed=seed, thread=1, verbose=0)
    out = {}
    for split, docs in other_tokens.items():
        probs = np.zeros((len(docs), len(label_names)))
        for r, toks in enumerate(docs):
            # model.f.predict: fastText's numpy-2-safe path (model.predict uses np.array(copy=False))
            for p, label in model.f.predict(" ".join(toks) + "\n", -1, 0.0, "strict"):
                probs[r, int(label[len("__label__"):])] = p
        out[split] = probs
    return out
