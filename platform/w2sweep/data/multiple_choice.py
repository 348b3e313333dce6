"""Multiple-choice datasets as binary tasks: a question with one candidate answer -> is it correct.

Each row becomes one example: with probability 1/2 the correct option (label 1), otherwise one of the
wrong options chosen uniformly (label 0), as in EleutherAI/scalable-elicitation. Templates follow it.

Rows are grouped by what they share with other rows: the question (SciQ), or the passage or context
that several questions read (HellaSwag, CosmosQA, QuAIL, Social IQa). An example whose passage the
student saw with its answer in another pool is a near-copy, not a test of generalization.
"""

from __future__ import annotations

from w2sweep.data.loader import Loader


def _pick(rng, options: list[str], correct: int) -> tuple[str, int]:
    """(shown option, label): the correct one with probability 1/2, else a random wrong one."""
    if rng.random() < 0.5:
        return options[correct], 1
    wrong = [o for i, o in enumerate(options) if i != correct]
    return wrong[rng.integers(len(wrong))], 0


def _hellaswag(row, rng):
    endings = [str(e) for e in row["endings"]]
    answer, label = _pick(rng, endings, int(row["label"]))  # "" on the unlabeled test split: ValueError
    joined = "\n".join(endings)
    text = f'Context:\n{row["ctx"]}\n\nContinuations:\n\n{joined}\n\nQ: Is "{answer}" the best continuation?'
    return text, label


def _sciq(row, rng):
    options = [row["correct_answer"], row["distractor1"], row["distractor2"], row["distractor3"]]
    answer, label = _pick(rng, [str(o) for o in options], 0)
    return f"Q: {row['question']} A: {answer}", label


def _cosmos_qa(row, rng):
    options = [str(row[f"answer{i}"]) for i in range(4)]
    correct = int(row["label"])
    if "None of the above choices" in options[correct]:
        # As the anchor does: "none of the above" as the true answer only ever appears as a negative.
        answer, label = options[[i for i in range(4) if i != correct][rng.integers(3)]], 0
    else:
        answer, label = _pick(rng, options, correct)
    return f"Context: {row['context']}\nQuestion: {row['question']}\nAnswer: {answer}", label


def _quail(row, rng):
    answer, label = _pick(rng, [str(a) for a in row["answers"]], int(row["correct_answer_id"]))
    return f'Passage:\n\n{row["context"]}\n\nQ: "{row["question"]}" Is the answer "{answer}"?', label


def _social_i_qa(row, rng):
    options = [str(row["answerA"]), str(row["answerB"]), str(row["answerC"])]
    answer, label = _pick(rng, options, int(row["label"]) - 1)  # the hub's labels are "1", "2", "3"
    text = (f'Context:\n{row["context"]}\n\nQuestion: "{row["question"]}"\n\nChoices:\n'
            f'{options[0]}\n{options[1]}\n{options[2]}\n\nIs the answer "{answer}"?')
    return text, label


LOADERS = [
    Loader("hellaswag", "Rowan/hellaswag", None, ("ctx", "endings", "label"), _hellaswag,
           "context + one of 4 endings -> it is the right continuation", group="ctx"),
    Loader("sciq", "allenai/sciq", None,
           ("question", "correct_answer", "distractor1", "distractor2", "distractor3"), _sciq,
           "science question + one of 4 answers -> it is correct", group="question"),
    Loader("cosmos_qa", "allenai/cosmos_qa", None,
           ("context", "question", "answer0", "answer1", "answer2", "answer3", "label"), _cosmos_qa,
           "passage + question + one of 4 answers -> it is correct", group="context"),
    Loader("quail", "textmachinelab/quail", None, ("context", "question", "answers", "correct_answer_id"), _quail,
           "passage + question + one of 4 answers -> it is correct", group="context"),
    Loader("social_i_qa", "allenai/social_i_qa", None,
           ("context", "question", "answerA", "answerB", "answerC", "label"), _social_i_qa,
           "social situation + question + one of 3 answers -> it is correct", group="context"),
]
