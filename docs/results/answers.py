"""The tables of docs/results/README.md, read off the frontier's CSVs copied into this folder.

    python docs/results/answers.py docs/results     # prints markdown

Nothing is recomputed: every number is a cell of curves.csv, regimes.csv, pgr.csv or no_signal.csv
(95% intervals as the frontier wrote them)."""

import sys
from pathlib import Path

import pandas as pd


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
        print(f"| {r.dataset} | {r.student} | {r.method} | {r.budget:g} | {r.best_fraction:g} | {r.best_accuracy:.3f} | "
              f"{r.accuracy_at_0:.3f} | {r.accuracy_at_1:.3f} | {d0} | {d1} | {r.regime} | {reason} |")


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
    no_signal(root)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else str(Path(__file__).parent))
