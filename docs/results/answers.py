"""The tables of docs/results/README.md, read off the frontier's CSVs copied into this folder.

    python docs/results/answers.py docs/results     # prints markdown

Every number is a cell of curves.csv, regimes.csv, pgr.csv or no_signal.csv (95% intervals as the
frontier wrote them), except the paired differences between two students or methods, which are
t-intervals over the seeds both ran (scipy's ttest_rel) on the per-cell rows of results.parquet: the
same seed means the same pools, so the same test examples."""

import sys
from pathlib import Path

import pandas as pd
from scipy import stats


def ci(mean, low, high, digits=3):
    if pd.isna(mean):
        return "–"
    if pd.isna(low) or pd.isna(high):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def acc(row) -> str:
    return ci(row.accuracy_mean, row.accuracy_ci_low, row.accuracy_ci_high)


def auroc(row) -> str:
    return ci(row.auroc_mean, row.auroc_ci_low, row.auroc_ci_high)


def ceilings(curves: pd.DataFrame) -> None:
    print("### Ceilings (sft-oracle on the whole oracle pool)\n")
    print("| dataset | student | seeds | n_oracle | accuracy [95% CI] | AUROC [95% CI] | majority rate |")
    print("|---|---|---|---|---|---|---|")
    for r in curves[curves.method == "ceiling"].itertuples():
        print(f"| {r.dataset} | {r.student} | {r.num_seeds} | {r.n_oracle} | {acc(r)} | {auroc(r)} | {r.majority_rate:.3f} |")


def pgr_at_zero(curves: pd.DataFrame, pgr: pd.DataFrame) -> None:
    print("\n### Student on weak labels only (f = 0) vs its weak supervisor: PGR\n")
    print("| dataset | student | method | budget | n_weak | student acc [95% CI] | weak acc | ceiling acc | PGR [interval] or reason |")
    print("|---|---|---|---|---|---|---|---|---|")
    zero = pgr[(pgr.spending_fraction == 0) & (pgr.method != "ceiling")]
    for r in zero.itertuples():
        c = curves[(curves.dataset == r.dataset) & (curves.student == r.student) & (curves.method == r.method)
                   & (curves.budget == r.budget) & (curves.spending_fraction == 0)].iloc[0]
        value = r.reason if pd.isna(r.pgr) else ci(r.pgr, r.pgr_low, r.pgr_high, 2)
        print(f"| {r.dataset} | {r.student} | {r.method} | {r.budget:g} | {r.n_weak} | {acc(c)} | "
              f"{r.weak_accuracy_mean:.3f} | {ci(r.ceiling_accuracy, r.ceiling_ci_low, r.ceiling_ci_high)} | {value} |")


def regimes_table(regimes: pd.DataFrame) -> None:
    print("\n### Best spending fraction per budget (regimes.csv)\n")
    print("| dataset | student | method | budget | best f | acc at best | acc f=0 | acc f=1 | best − f=0 [CI] | best − f=1 [CI] | regime | reason |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in regimes[regimes.method != "ceiling"].itertuples():
        d0 = ci(r.best_accuracy - r.accuracy_at_0, r.diff_0_low, r.diff_0_high) if pd.notna(r.accuracy_at_0) else "–"
        d1 = ci(r.best_accuracy - r.accuracy_at_1, r.diff_1_low, r.diff_1_high) if pd.notna(r.accuracy_at_1) else "–"
        reason = "" if pd.isna(r.reason) else r.reason
        at_0, at_1 = (ci(value, None, None) for value in (r.accuracy_at_0, r.accuracy_at_1))  # "–" where not run
        print(f"| {r.dataset} | {r.student} | {r.method} | {r.budget:g} | {r.best_fraction:g} | {r.best_accuracy:.3f} | "
              f"{at_0} | {at_1} | {d0} | {d1} | {r.regime} | {reason} |")


def small_budget_methods(curves: pd.DataFrame, budget: float = 16) -> None:
    """Every student and method at one small budget, f = 0 and 1, on the datasets that run more than one."""
    at = curves[(curves.budget == budget) & curves.spending_fraction.isin([0, 1])]
    several = at.groupby("dataset")[["student", "method"]].apply(lambda g: len(g.drop_duplicates())) > 1
    at = at[at.dataset.isin(several[several].index)]
    print(f"\n### Every student and method at budget {budget:g} (f = 0: weak labels only; f = 1: gold labels only)\n")
    print("| dataset | student | method | f | n_weak | n_oracle | seeds | accuracy [95% CI] | AUROC [95% CI] | majority rate |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in at.sort_values(["dataset", "spending_fraction", "student", "method"]).itertuples():
        print(f"| {r.dataset} | {r.student} | {r.method} | {r.spending_fraction:g} | {r.n_weak} | {r.n_oracle} | "
              f"{r.num_seeds} | {acc(r)} | {auroc(r)} | {r.majority_rate:.3f} |")


# (student, method) pairs compared at budget 16 on SST-2: (A, B, what A - B asks)
PAIRS = [
    (("smollm2-135m-lora", "seq-sft+fewshot"), ("smollm2-135m-lora", "seq-sft"), "4 of the labels as shots in the prompt, in training and test"),
    (("smollm2-135m", "fewshot-prompt"), ("smollm2-135m-probe", "seq-sft"), "every label a shot, no training, against a probe on the same labels"),
    (("smollm2-135m-lora", "seq-sft"), ("smollm2-135m-probe", "seq-sft"), "LoRA against a linear probe"),
    (("minilm-l6-full", "seq-sft"), ("minilm-l6-probe", "seq-sft"), "full fine-tuning against a linear probe"),
]


def paired(a: pd.Series, b: pd.Series) -> str:
    """mean of a - b over their common seeds, with the t-interval of the paired differences."""
    both = pd.concat([a, b], axis=1, join="inner").dropna()
    diff = both.iloc[:, 0] - both.iloc[:, 1]
    if len(diff) < 2:
        return "–"
    low, high = stats.ttest_rel(both.iloc[:, 0], both.iloc[:, 1]).confidence_interval(0.95)
    return f"{diff.mean():+.3f} [{low:+.3f}, {high:+.3f}]"


def method_differences(results: pd.DataFrame, dataset: str = "sst2-4k", budget: float = 16) -> None:
    print(f"\n### Paired differences at budget {budget:g} on {dataset} (same seeds, same test examples)\n")
    print("| A | B | what A − B asks | f | seeds | accuracy A − B [95% CI] | AUROC A − B [95% CI] |")
    print("|---|---|---|---|---|---|---|")
    at = results[(results.dataset == dataset) & (results.budget == budget)]
    for (sa, ma), (sb, mb), what in PAIRS:
        for f in (0, 1):
            rows = [at[(at.student == s) & (at.method == m) & (at.spending_fraction == f)].set_index("seed")
                    for s, m in ((sa, ma), (sb, mb))]
            seeds = len(set(rows[0].index) & set(rows[1].index))
            if not seeds:
                continue
            print(f"| {sa} {ma} | {sb} {mb} | {what} | {f} | {seeds} | {paired(rows[0].accuracy, rows[1].accuracy)} | "
                  f"{paired(rows[0].auroc, rows[1].auroc)} |")


def no_signal(root: Path) -> None:
    path = root / "no_signal.csv"
    signal = pd.read_csv(path) if path.exists() else pd.DataFrame()
    print("\n### No signal (no_signal.csv)\n")
    if signal.empty:
        print("none: every (dataset, weak supervisor, student) has a ceiling AUROC interval above 0.5 and a point "
              "significantly above the majority-class rate")
    for r in signal.itertuples():
        print(f"- {r.dataset} / {r.weak_supervisor} / {r.student}: {r.reason}")


def main(folder: str) -> None:
    root = Path(folder)
    curves = pd.read_csv(root / "curves.csv")
    ceilings(curves)
    pgr_at_zero(curves, pd.read_csv(root / "pgr.csv"))
    regimes_table(pd.read_csv(root / "regimes.csv"))
    small_budget_methods(curves)
    method_differences(pd.read_parquet(root / "results.parquet"))
    no_signal(root)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).parent))
