"""Datasets that already have a binary label: the text is a template over the row's fields
(templates as in EleutherAI/scalable-elicitation), the label is the row's own.

Rows that share a passage (BoolQ: several questions per passage) or a sentence (PAWS: one sentence
in several pairs) are grouped, so the pools never split them."""

from __future__ import annotations

from w2sweep.data.loader import Loader, hard_label


def _boolq(row, rng):
    return f"Passage: {row['passage']}\nQuestion: {row['question']}", hard_label(row["answer"], column="answer")


def _paws(row, rng):
    text = (f"Sent 1: {row['sentence1']}\nSent 2: {row['sentence2']}\n\n"
            "Q: Are these sentences semantically equivalent?")
    return text, hard_label(row["label"], column="label")


def _sentence(row, rng):
    return str(row["sentence"]), hard_label(row["label"], column="label")


def _amazon_polarity(row, rng):
    return f"{row['title']} {row['content']}", hard_label(row["label"], column="label")


LOADERS = [
    Loader("boolq", "google/boolq", None, ("question", "passage", "answer"), _boolq,
           "passage + yes/no question -> answer is yes", group="passage"),
    Loader("paws", "google-research-datasets/paws", "labeled_final", ("sentence1", "sentence2", "label"), _paws,
           "two sentences -> they are paraphrases", group=("sentence1", "sentence2")),
    Loader("cola", "nyu-mll/glue", "cola", ("sentence", "label"), _sentence,
           "sentence -> it is grammatically acceptable"),
    Loader("sst2", "stanfordnlp/sst2", None, ("sentence", "label"), _sentence,
           "movie-review sentence -> it is positive"),
    Loader("amazon_polarity", "fancyzhx/amazon_polarity", None, ("title", "content", "label"), _amazon_polarity,
           "product review title + body -> it is positive"),
]
