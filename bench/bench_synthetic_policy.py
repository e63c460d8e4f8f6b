"""Synthetic-world quality bar: the learned policy's TRUE incremental margin vs the oracle's.

Generates a synthetic world (or reads one with --data), trains with
`training.pipeline.fit_policy` exactly as `winback train` does, and prints, from the
evaluation's true values (`ground_truth.parquet` on the held-out contacts): the learned policy,
the oracle, the best single option, random and no incentive, the learned share of the oracle
(bar: >= 85%) and learned minus best single. Also: wall time per training stage and the peak
resident memory of training.

Diagnostics (same fitted models, no refit): the learned policy's true value for several z
(the width of the confidence bound), for the S- and the T-learner, and with the model's
economics (expected margin of a converting order) swapped for the truth's, or its conversion
probabilities swapped for the truth's, to say where the gap to the oracle comes from.

Run: .venv/bin/python bench/bench_synthetic_policy.py [--customers 200000] [--z 1.96]
     [--bags 8] [--sweep-z 0 0.5 1 1.96] [--data DIR] [--seed 0] [--world-seed 7]
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import features.engine
import training.fit
import training.held_out_eval
import training.inputs
import training.pipeline
import training.protocol
from features import constants as c
from features import modeling_frame as mf
from features.frames import Frame
from features.synthetic.generate import generate_world, write_world
from models.calibration import OptionCalibrator
from models.policy_model import PolicyModel
from models.uplift import BaggedOptionLearner, SLearner, TLearner
from models.value import incremental_margin
from training.evaluate import held_out
from training.fit import (
    encode_features,
    logged_propensity,
    oob_default_option,
    response_split,
    sample_rows,
)
from training.inputs import load_training_inputs

BAR = 0.85
STAGES: dict[str, float] = {}
CPU: dict[str, float] = {}  # process CPU seconds per stage (all threads): steadier when loaded
FITTED: dict[str, BaggedOptionLearner] = {}


# --- measuring ----------------------------------------------------------------------------------
def _rss_peak_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _reset_rss_peak() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) so training's own peak can be read."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _tree_rss_kib(root: int) -> int:
    """Resident memory of `root` and every descendant process (worker processes included)."""
    parent: dict[int, int] = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
                parent[int(d.name)] = int(stat.rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    tree, frontier = {root}, [root]
    while frontier:
        p = frontier.pop()
        kids = [k for k, pp in parent.items() if pp == p and k not in tree]
        tree.update(kids)
        frontier.extend(kids)
    total = 0
    for pid in tree:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total


class TreePeak:
    """Samples the process tree's total resident memory twice a second, keeps the peak."""

    def __init__(self) -> None:
        import os
        import threading

        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(os.getpid(),), daemon=True)

    def _run(self, root: int) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, _tree_rss_kib(root))
            self._stop.wait(0.5)

    def __enter__(self) -> TreePeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


@contextlib.contextmanager
def timed(obj: Any, attr: str, label: str) -> Iterator[None]:
    """Wrap `obj.attr` so every call adds its wall time to STAGES[label]; restore after."""
    original = getattr(obj, attr)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        t0, c0 = time.perf_counter(), time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            STAGES[label] = STAGES.get(label, 0.0) + time.perf_counter() - t0
            CPU[label] = CPU.get(label, 0.0) + time.process_time() - c0

    setattr(obj, attr, wrapper)
    try:
        yield
    finally:
        setattr(obj, attr, original)


def _capture_fit(cls: type[BaggedOptionLearner], label: str) -> Callable[..., Any]:
    original = cls.fit

    def fit(self: BaggedOptionLearner, *args: Any, **kwargs: Any) -> Any:
        t0, c0 = time.perf_counter(), time.process_time()
        out = original(self, *args, **kwargs)
        STAGES[label] = STAGES.get(label, 0.0) + time.perf_counter() - t0
        CPU[label] = CPU.get(label, 0.0) + time.process_time() - c0
        FITTED[label] = self
        return out

    return fit


@contextlib.contextmanager
def instrumented() -> Iterator[None]:
    """Time every stage of load_training_inputs and fit_policy (the real functions)."""
    fits = {SLearner: "  s_learner fit", TLearner: "  t_learner fit"}
    originals = {cls: cls.__dict__.get("fit") for cls in fits}
    with contextlib.ExitStack() as stack:
        ti, tp = training.inputs, training.pipeline
        stack.enter_context(timed(ti, "load_data_dir", "load data directory"))
        stack.enter_context(timed(features.engine.FeatureEngine, "__init__", "index (engine)"))
        stack.enter_context(timed(training.protocol, "reactivation_frame", "reactivation frame"))
        stack.enter_context(timed(ti, "offer_response_frame", "offer-response frame"))
        stack.enter_context(timed(tp, "fit_reactivation", "fit reactivation"))
        stack.enter_context(timed(tp, "fit_response", "fit response (S and T)"))
        stack.enter_context(timed(tp, "build_policy_model", "build policy model"))
        stack.enter_context(timed(tp, "evaluate_reactivation", "evaluate reactivation"))
        stack.enter_context(
            timed(training.held_out_eval, "evaluate_held_out", "evaluate held-out partitions")
        )
        stack.enter_context(timed(ti, "_sampled_inputs", "sampled inputs (all partitions)"))
        stack.enter_context(timed(tp, "evaluate_response", "evaluate response"))
        for cls, label in fits.items():
            cls.fit = _capture_fit(cls, label)  # type: ignore[method-assign]
        try:
            yield
        finally:
            for cls, fit in originals.items():
                if fit is None:
                    del cls.fit  # inherited: fall back to the base class's again
                else:
                    cls.fit = fit  # type: ignore[method-assign]


# --- true values --------------------------------------------------------------------------------
def true_values(model: PolicyModel, df: pd.DataFrame, truth: pd.DataFrame) -> pd.DataFrame:
    """(n, options) true incremental margin of each option for the held-out contacts."""
    t = truth.set_index(c.CONTACT_ID).reindex(df[c.CONTACT_ID].astype(str))
    mar = t["margin_if_convert"].to_numpy(dtype=float)
    rev = t["revenue_if_convert"].to_numpy(dtype=float)
    p = np.column_stack([t[f"p_{o}"].to_numpy(dtype=float) for o in model.options])
    cost = model.cost_matrix(rev)
    v = incremental_margin(p, mar, cost, model.options.index(model.control))
    return pd.DataFrame(v, columns=list(model.options))


def value_of(choice: np.ndarray, tv: pd.DataFrame) -> float:
    cols = tv.columns.get_indexer(pd.Index(choice))
    return float(np.nanmean(tv.to_numpy()[np.arange(len(tv)), cols]))


def choose(decision: np.ndarray, options: tuple[str, ...]) -> np.ndarray:
    best = np.argmax(np.where(np.isfinite(decision), decision, -np.inf), axis=1)
    return np.asarray(options, dtype=object)[best]


def model_for(learner: BaggedOptionLearner, base: PolicyModel, frame: Frame, seed: int) -> Any:
    """`base` with another fitted learner: its own option calibration and default option."""
    enc = encode_features(frame)
    train = np.flatnonzero(~response_split(frame, seed))
    n_fit = len(learner.oob_proba_options_)
    if n_fit != len(train):  # fitted on the sample the S/T choice was made on
        train = train[sample_rows(len(train), seed, n_fit)]
    t = frame.data[frame.spec.treatment_column].astype(str).to_numpy()[train]
    y = frame.data[mf.CONVERTED].astype(int).to_numpy()[train]
    e = logged_propensity(frame)[train]
    oob = learner.oob_proba_options_
    ok = np.isfinite(oob.to_numpy()).all(axis=1)
    cal = OptionCalibrator().fit(oob[ok], t[ok], y[ok], e[ok])
    model = replace(base, response=learner, calibration_shift=dict(cal.shift_))
    Xtr = enc.X.to_numpy(dtype=float)[train]
    rows = Frame(frame.data.iloc[train].reset_index(drop=True), frame.spec)
    model.default_option = oob_default_option(model, learner, cal, Xtr, rows)
    return model


MIN_SUPPORT = 0.02


def decisions(model: PolicyModel, X: np.ndarray, zs: list[float]) -> dict[float, np.ndarray]:
    """Decision values of `model` for several z, bags computed once (as PolicyModel.score)."""
    _, values = model.option_bags(X)
    d = model.options.index(model.default_option or model.control)
    gain = values - values[:, :, [d]]
    value = values.mean(axis=0)
    out = {}
    for z in zs:
        dv = value[:, [d]] + gain.mean(axis=0) - z * gain.std(axis=0, ddof=1)
        dv[:, d] = value[:, d]
        out[z] = dv
    return out


def estimated_support(model: PolicyModel, frame: Frame, seed: int, X: np.ndarray) -> np.ndarray:
    """(n, options) P(option assigned | x) from a multiclass LightGBM on the training contacts.

    Training never reads the truth, and neither does this: it only learns where each option was
    ever assigned (the campaigns' eligibility rules), i.e. where the data can say anything.
    """
    import lightgbm as lgb

    enc = encode_features(frame)
    train = ~response_split(frame, seed)
    t = frame.data[frame.spec.treatment_column].astype(str).to_numpy()[train]
    clf = lgb.LGBMClassifier(
        n_estimators=100, num_leaves=15, min_child_samples=100, random_state=seed, verbose=-1
    )
    clf.fit(enc.X.to_numpy(dtype=float)[train], t)
    proba = np.asarray(clf.predict_proba(X))
    classes = [str(k) for k in clf.classes_]
    out = np.zeros((X.shape[0], len(model.options)))
    for j, o in enumerate(model.options):
        if o in classes:
            out[:, j] = proba[:, classes.index(o)]
    return out


def diagnose(
    model: PolicyModel, frame: Frame, truth: pd.DataFrame, seed: int, zs: list[float]
) -> None:
    h = held_out(model, frame, seed)
    tv = true_values(model, h.df, truth)
    oracle = float(np.nanmean(tv.max(axis=1)))
    share = lambda v: f"{v:8.3f}  {v / oracle:6.1%}"  # noqa: E731
    print(f"\n--- diagnostics on {len(h.df):,} held-out contacts (oracle {oracle:.3f}) ---")
    print("true mean value per option (best single = argmax):")
    means = tv.mean().sort_values(ascending=False)
    print("  " + "  ".join(f"{o}={v:.3f}" for o, v in means.items()))
    oracle_choice = tv.columns.to_numpy()[np.nanargmax(tv.to_numpy(), axis=1)]
    print(
        "oracle's choices:  "
        + ", ".join(f"{k} {v:.0%}" for k, v in pd.Series(oracle_choice).value_counts(True).items())
    )

    support = estimated_support(model, frame, seed, h.X)
    on = support >= MIN_SUPPORT
    tvals = tv.to_numpy()
    supported_oracle = float(np.nanmean(np.where(on, tvals, -np.inf).max(axis=1)))
    print(
        f"oracle restricted to options with estimated assignment propensity >= {MIN_SUPPORT}: "
        f"{supported_oracle:.3f} ({supported_oracle / oracle:.1%} of oracle); options outside "
        f"that support on {1 - on.mean():.1%} of (contact, option) pairs"
    )
    print("\nlearner      z    true value  share   | support-masked: value  share   deviating")
    for name, learner in FITTED.items():
        alt = model if learner is model.response else model_for(learner, model, frame, seed)
        tag = " (chosen)" if learner is model.response else ""
        if len(learner.oob_proba_options_) < int(model.metadata.get("train_rows", 0)):
            tag = f" (fitted on the {len(learner.oob_proba_options_):,}-contact choice sample)"
        for z, dv in decisions(alt, h.X, zs).items():
            pick = choose(dv, alt.options)
            masked = choose(np.where(on, dv, -np.inf), alt.options)
            dev = float(np.mean(masked != alt.default_option))
            print(
                f"{name.strip()[:9]:9s} {z:5.2f}  {share(value_of(pick, tv))}  |        "
                f"{share(value_of(masked, tv))}  {dev:6.1%}{tag}"
            )

    # where does the gap come from: probabilities or economics?
    t = truth.set_index(c.CONTACT_ID).reindex(h.df[c.CONTACT_ID].astype(str))
    true_mar = t["margin_if_convert"].to_numpy(dtype=float)
    true_rev = t["revenue_if_convert"].to_numpy(dtype=float)
    rev, mar = model.economics(h.X)
    ok = np.isfinite(true_mar) & np.isfinite(mar)
    corr = float(np.corrcoef(mar[ok], true_mar[ok])[0, 1])
    print(
        f"\neconomics: model expected margin mean {np.mean(mar):.2f} vs truth "
        f"margin_if_convert mean {np.nanmean(true_mar):.2f}; correlation {corr:.3f}; "
        f"median ratio {np.nanmedian(mar / true_mar):.2f}"
    )
    print(
        f"           model expected revenue mean {np.mean(rev):.2f} vs truth "
        f"revenue_if_convert mean {np.nanmean(true_rev):.2f}"
    )
    bags = model._bags(h.X)
    ctrl = model.options.index(model.control)
    p_true = np.column_stack([t[f"p_{o}"].to_numpy(dtype=float) for o in model.options])
    rows = {
        "model p, model economics (z=0)": (bags.mean(axis=0), mar, rev),
        "model p, TRUE economics (z=0)": (bags.mean(axis=0), true_mar, true_rev),
        "TRUE p, model economics": (p_true, mar, rev),
    }
    print("policy (argmax of point values)          true value  share")
    for label, (p, m_, r_) in rows.items():
        v = incremental_margin(p, m_, model.cost_matrix(r_), ctrl)
        print(f"  {label:38s} {share(value_of(choose(v, model.options), tv))}")
    p_mean = bags.mean(axis=0)
    err = pd.DataFrame(
        {
            "model_p": p_mean.mean(axis=0),
            "true_p": np.nanmean(p_true, axis=0),
            "model_uplift": (p_mean - p_mean[:, [ctrl]]).mean(axis=0),
            "true_uplift": np.nanmean(p_true - p_true[:, [ctrl]], axis=0),
        },
        index=list(model.options),
    )
    corr_u = [
        float(np.corrcoef(p_mean[:, j] - p_mean[:, ctrl], p_true[:, j] - p_true[:, ctrl])[0, 1])
        if j != ctrl
        else np.nan
        for j in range(len(model.options))
    ]
    err["uplift_corr"] = corr_u
    print("\nper option, held-out means (model vs truth):")
    print(err.round(4).to_string())


# --- main ---------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=200_000)
    ap.add_argument("--world-seed", type=int, default=7, help="seed of the generated world")
    ap.add_argument("--seed", type=int, default=0, help="training seed")
    ap.add_argument(
        "--z", type=float, default=None, help="fix the bound's width (default: chosen in training)"
    )
    ap.add_argument("--bags", type=int, default=8)
    ap.add_argument("--data", type=Path, default=None, help="an existing synthetic world")
    ap.add_argument("--sweep-z", type=float, nargs="*", default=[0.0, 0.5, 1.0, 1.96])
    ap.add_argument("--no-diagnose", action="store_true")
    ap.add_argument(
        "--selection-rows",
        type=int,
        default=None,
        help="training contacts the S/T choice is made on (default training.fit.SELECTION_ROWS)",
    )
    ap.add_argument(
        "--sample-customers",
        type=int,
        default=None,
        help="fit on a stratified sample of N customers, as `winback train --sample-customers`"
        " (frames built partition by partition, evaluated on every held-out row)",
    )
    ap.add_argument("--jobs", type=int, default=1, help="with --sample-customers: worker processes")
    ap.add_argument(
        "--compiled-eval",
        action="store_true",
        help="with --sample-customers: score the held-out rows with compiled trees (lleaves)",
    )
    ap.add_argument(
        "--reference-share",
        type=float,
        default=0.922,
        help="the share to print beside (default: the 1M world fitted on every customer)",
    )
    args = ap.parse_args()
    import logging  # the training stages' progress lines, time-stamped, on stderr

    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", "%H:%M:%S"))
    train_log = logging.getLogger("winback.training")
    train_log.addHandler(handler)
    train_log.setLevel(logging.INFO)
    if args.selection_rows is not None:
        training.fit.SELECTION_ROWS = args.selection_rows

    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        t0 = time.perf_counter()
        if data is None:
            data = write_world(generate_world(args.customers, args.world_seed), Path(tmp) / "w")
            print(f"generated {args.customers:,} customers in {time.perf_counter() - t0:.1f}s")
        base_rss = _rss_peak_kib()
        reset = _reset_rss_peak()
        t1, c1 = time.perf_counter(), time.process_time()
        with instrumented(), TreePeak() as tree:
            inputs = load_training_inputs(
                data, sample_customers=args.sample_customers, seed=args.seed, n_jobs=args.jobs
            )
            t2 = time.perf_counter()
            np.random.seed(args.seed)
            model, ev = training.pipeline.fit_policy(
                inputs,
                args.seed,
                z=args.z,
                n_bags=args.bags,
                n_jobs=args.jobs,
                compiled_eval=args.compiled_eval,
            )
        t3, c3 = time.perf_counter(), time.process_time()
        peak = _rss_peak_kib()
        if inputs.sample is not None:
            print(f"\ncustomer sample: {ev.notes['customer_sample']}")
            print(inputs.sample.strata.to_string())
        m = ev.metrics
        if "true_incremental_margin_learned" not in m:
            raise SystemExit("no true values: is ground_truth.parquet in the data directory?")
        tv = {k: m[f"true_incremental_margin_{k}"] for k in ("learned", "oracle", "best_single")}
        print(
            f"\nsynthetic world {data} | seed {args.seed} | z {model.z} | bags {args.bags} | "
            f"learner {model.metadata.get('response_learner')} | default "
            f"{model.default_option} | held-out contacts {int(m['response_test_rows']):,}"
        )
        print("true incremental margin per contact (ground truth, held-out contacts):")
        for name in ("learned", "oracle", "best_single", "random", "no_incentive", "no_contact"):
            print(f"  {name:14s} {m[f'true_incremental_margin_{name}']:8.3f}")
        share = m.get("learned_share_of_oracle", float("nan"))
        verdict = "PASS" if share >= BAR else "FAIL"
        print(f"  learned share of oracle {share:.1%}  (bar >= {BAR:.0%}: {verdict})")
        print(
            f"  beside: {args.reference_share:.1%} (--reference-share; default the 1M world "
            f"fitted on every customer); ratio {share / args.reference_share:.3f}"
        )
        bs_share = tv["best_single"] / tv["oracle"]
        print(f"  best single share of oracle {bs_share:.1%}")
        diff = tv["learned"] - tv["best_single"]
        print(
            f"  learned - best single {diff:+.3f} per contact "
            f"({diff / abs(tv['best_single']):+.1%}); deviating from best single on "
            f"{m['share_deviating_from_best_single']:.1%} of contacts"
        )
        print(
            f"\ntraining wall time {t3 - t1:.1f}s (inputs {t2 - t1:.1f}s, fit_policy "
            f"{t3 - t2:.1f}s); process CPU {c3 - c1:.1f}s; peak RSS during training "
            f"{peak / 1024**2:.2f} GiB" + ("" if reset else " (process peak: reset unsupported)")
        )
        print(f"  (peak RSS before training, incl. generation: {base_rss / 1024**2:.2f} GiB)")
        print(
            f"  peak RSS of the process tree (this process and its workers, sampled every "
            f"0.5 s): {tree.peak / 1024**2:.2f} GiB"
        )
        if inputs.sample is not None:
            print("  partition pass, seconds summed over partitions (and workers):")
            for step, secs in inputs.sample.seconds.items():
                print(f"    {step:26s} {secs:7.1f}s")
        print(f"  {'stage':28s} {'wall':>8s} {'cpu':>8s}")
        for stage, secs in STAGES.items():
            print(f"  {stage:28s} {secs:7.1f}s {CPU.get(stage, 0.0):7.1f}s")
        rule = ev.tables.get("decision_rule_choice")
        if rule is not None:
            ref = rule.attrs.get("reference_option", "?")
            print(f"\ndecision rule chosen in training (DR gain vs '{ref}' for everyone, on the")
            print(f"latest {int(model.metadata['rule_validation_rows']):,} training contacts):")
            print(rule.round(4).to_string(index=False))
        held = inputs.held_out.offer_response_frame() if inputs.held_out else inputs.offer_response
        if not args.no_diagnose and held is not None and inputs.ground_truth is not None:
            diagnose(model, held, inputs.ground_truth, args.seed, args.sweep_z)
        if inputs.held_out is not None:
            inputs.held_out.remove()


if __name__ == "__main__":
    main()
