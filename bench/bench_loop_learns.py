"""Loop bar: does play -> export-log -> train -> promote raise the TRUE margin round over round?

Starting from the rules-only policy, round 0 plays one wave on a generated world
(`serving.world.play.play_wave`: decisions recorded through the batch/API path, outcomes drawn
from the world's true model and posted through the events path). Each later round exports the
store's log merged with the world's data (`serving.learning.export_log`, as `winback
export-log --base` does), trains on it (`training.pipeline.train`, what `winback train
--crossfit` calls by default, so the wave just played trains too; `--no-crossfit`: what
`winback train` calls, which holds the latest contacts out; logged to a temporary MLflow
store, registered as the challenger), promotes it
(`training.promote.promote`, what `winback promote` calls: the first model becomes champion,
since the rules-only policy has no model to compare with; later ones only if their doubly
robust value on the held-out contacts beats the champion's with confidence) and plays the next
wave with whatever is then champion, loaded from the registry as the service loads it.

Per round it prints the TRUE incremental margin per contact of the played policy
(`truth.json`'s figure), its true margin per eligible customer (customers with at least one
allowed option, holdouts excluded; no contact is worth 0) and the oracle's on the same
customers (the best allowed option by true incremental margin, or no contact when none is
positive), and the share; beside it the share the same policy would reach without exploration
(its greedy choice, from the truth), and the share of the oracle played with the policy's
exploration (the ceiling: a perfect model's values under the same exploration, through the
engine's own `exploration_probabilities`). Bar: the played policy's figure rises round over
round, and the last round reaches at least 80% of the oracle.

The policy explores with epsilon 0.2 `among: positive` with `floor` 0.02 by default (only the
floor is spread over every allowed option; the rest over the options the model values above no
contact); `--among allowed` is the uniform epsilon-greedy of earlier runs.

`--promote always` promotes every challenger (`winback promote --force`), so each round plays
the newest model; with `--diagnose`, rounds from 2 on also print the greedy share of the oracle
on that round's customers of every earlier version that does not play, beside the played one.

Run: .venv/bin/python bench/bench_loop_learns.py [--customers 20000] [--world-seed 11]
     [--rounds 3] [--days-between 35] [--bags 8] [--seed 0] [--no-crossfit] [--z Z]
     [--epsilon 0.2] [--among positive|allowed] [--floor 0.02] [--promote rule|always]
     [--diagnose]
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from features import constants as c
from features.build import build_customer_view
from features.datadir import load_data_dir
from features.settings import Settings
from features.snapshot import Snapshot, write_snapshot
from features.synthetic.generate import generate_world, write_world
from features.synthetic.state import true_state
from models.pyfunc import load_policy_model
from serving.batch.local import Wave, snapshot_ids
from serving.decide import Decider, decide_rows
from serving.engine import OptionSet
from serving.engine.choose import exploration_probabilities
from serving.learning import export_log
from serving.model_scorer import PolicyScorer
from serving.policy import Exploration, parse_policy
from serving.store import ContactCaps, Store, upgrade_database
from serving.world.play import model_feature_set, play_wave
from training.pipeline import train
from training.promote import promote
from training.registry import CHAMPION, get_alias

TYPES = "[percent_discount, amount_discount, free_shipping, bundle, extended_warranty, " + (
    "expert_consult, content, none]"
)
STAGE = "{{name: s{i}, offer_types: " + TYPES + ", min_days_since_previous: 0}}"
POLICY = f"""
journey:
  stages:
{chr(10).join("    - " + STAGE.format(i=i) for i in range(4))}
  sunset_days: 0
frequency:
  across_channels: [{{max_contacts: 1, days: 7}}]
holdout: {{share: 0.1, salt: loop}}
exploration: EXPLORATION
eligibility:
  lapse_states: [at_risk, lapsed]
  channels: [email, sms, push]
channel_preference: [email, sms, push]
"""


def greedy_decision(decider, data, store, at, folder):  # type: ignore[no-untyped-def]
    """The decider's choices without exploration at `at` on a snapshot in its model's feature
    set (nothing is recorded): the snapshot, its customer ids and the decided batch."""
    fs = model_feature_set(decider)
    write_snapshot(build_customer_view(data, pd.Timestamp(at), feature_set=fs), folder, keep=1)
    snap = Snapshot.load(folder)
    ids = snapshot_ids(snap)
    greedy = Decider(
        decider.options,
        decider.policy.model_copy(update={"exploration": Exploration(epsilon=0.0)}),
        decider.scorer,
        decider.base_caps,
    )
    known = np.ones(len(ids), dtype=bool)
    d = decide_rows(
        greedy,
        snap.matrix,
        known,
        ids,
        snap.feature_set,
        snap.as_of.to_pydatetime(),
        at,
        "auto",
        "oracle",
        store=store,
    ).batch
    return snap, ids, d


def oracle_and_eligible(world, data, decider, store, at, folder, diagnose=False, others=None):  # type: ignore[no-untyped-def]
    """Per eligible customer, decided before the wave is recorded: the oracle's true value, the
    oracle's under the policy's exploration, and the true value of the decider's greedy choice.
    `diagnose`: also print where the model's values part from the truth (`print_diagnosis`).
    `others`: {label: decider} of models that do not play; with `diagnose`, each one's greedy
    share of the oracle on the same customers is printed beside the played one's.
    """
    snap, ids, d = greedy_decision(decider, data, store, at, folder)
    state = true_state(world, data, at)
    im = world.model.incremental_margin(state)
    world_ids = pd.Index(world.tables[c.CUSTOMERS][c.CUSTOMER_ID].astype(str))
    rows = world_ids.get_indexer(pd.Index(ids.astype(str)))
    col = pd.Index(world.model.option_ids).get_indexer(pd.Index(list(d.options.offer_ids)))
    allowed = d.exclusion == 0
    held = decider.policy.holdout_mask(ids)
    eligible = allowed.any(axis=1) & ~held
    true_im = im[rows][:, col]
    values = np.where(allowed, true_im, -np.inf)
    top = values.max(axis=1)
    best = np.where(eligible, np.maximum(top, 0.0), 0.0)
    # the policy's exploration among the customers contacted, as the engine computes it, with
    # the true values in place of the model's
    ex = decider.policy.exploration
    probs = exploration_probabilities(
        allowed,
        np.where(allowed, true_im, np.nan),
        np.argmax(values, axis=1),
        ex.epsilon,
        ex.floor,
        ex.among == "positive",
    )
    spread = (probs * np.where(allowed, true_im, 0.0)).sum(axis=1)
    explored = np.where(eligible & (top > 0), spread, 0.0)
    chosen = d.chosen
    mine = np.where(chosen >= 0, true_im[np.arange(len(ids)), np.maximum(chosen, 0)], 0.0)
    if diagnose and others:
        oracle_mean = best[eligible].mean()
        print(
            f"      greedy share of the oracle on this round's customers: played "
            f"{mine[eligible].mean() / oracle_mean:.1%}",
            end="",
        )
        for name, other in others.items():
            _, other_ids, od = greedy_decision(other, data, store, at, folder.with_name("other"))
            assert list(other_ids) == list(ids)
            assert list(od.options.offer_ids) == list(d.options.offer_ids)
            assert (od.exclusion == d.exclusion).all()
            ochosen = od.chosen
            theirs = np.where(
                ochosen >= 0, true_im[np.arange(len(ids)), np.maximum(ochosen, 0)], 0.0
            )
            print(f", {name} {theirs[eligible].mean() / oracle_mean:.1%}", end="", flush=True)
        print()
    if diagnose:
        scorer = decider.scorer
        values = None
        if scorer is not None:
            scores = scorer.model.score(snap.matrix)
            order = pd.Index(scorer.model.options).get_indexer(pd.Index(list(d.options.offer_ids)))
            values = scores.value[:, order][eligible]
        print_diagnosis(
            list(d.options.offer_ids),
            true_im[eligible],
            allowed[eligible],
            values,
            state.take(rows[eligible]),
        )
    return best[eligible], explored[eligible], mine[eligible]


def print_diagnosis(offers, true_im, allowed, values, state):  # type: ignore[no-untyped-def]
    """Where the played model's values part from the truth, on the eligible customers.

    Per option: mean true and model incremental margin, their correlation across customers.
    Then the share of the oracle reached by a policy that knows the true mean value of every
    option in each segment (tier x purchase in the last 180 days x any delivery issue x
    discount share over 0.3 x contacts this lapse, capped at 2: the drivers of the true model)
    and gives each segment its best option: how far segment-level knowledge goes. Without a
    model (rules-only) only that line is printed.
    """
    oracle = np.maximum(np.where(allowed, true_im, -np.inf).max(axis=1), 0.0).mean()
    if values is not None:
        for j, offer in enumerate(offers):
            a = allowed[:, j] & np.isfinite(values[:, j])
            if a.sum() < 10:
                continue
            corr = np.corrcoef(true_im[a, j], values[a, j])[0, 1]
            print(
                f"      {offer:>12}: allowed {a.sum():6,}  true {true_im[a, j].mean():+.3f}  "
                f"model {values[a, j].mean():+.3f}  correlation {corr:+.2f}"
            )
    segments = pd.DataFrame(
        {
            "tier": state.tier,
            "recent": state.recency_days < 180,
            "delivery": state.delivery_issues > 0,
            "discount": state.discount_share > 0.3,
            "contacts": np.minimum(state.prior_contacts, 2),
        }
    )
    total = 0.0
    masked = np.where(allowed, true_im, np.nan)
    for rows in segments.groupby(list(segments.columns)).indices.values():
        counts = allowed[rows].sum(axis=0)
        means = np.nansum(masked[rows], axis=0) / np.maximum(counts, 1)
        means[counts == 0] = -np.inf
        j = int(np.argmax(means))
        if means[j] > 0:
            total += np.where(allowed[rows, j], true_im[rows, j], 0.0).sum()
    print(
        f"      segment oracle (best option per tier x recent x delivery issue x discount "
        f"share x contacts segment, true means): {total / len(true_im) / oracle:.1%} of the oracle"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--customers", type=int, default=20_000)
    ap.add_argument("--world-seed", type=int, default=11)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--days-between", type=int, default=35)
    ap.add_argument("--bags", type=int, default=8, help="as `winback train`'s default")
    ap.add_argument("--seed", type=int, default=0, help="of train and promote (their default)")
    ap.add_argument(
        "--crossfit",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train with `winback train --crossfit` (the latest, played contacts train too)",
    )
    ap.add_argument(
        "--z",
        type=float,
        default=None,
        help="fix the decision rule's z (`winback train --z`); default: training chooses it",
    )
    ap.add_argument("--epsilon", type=float, default=0.2)
    ap.add_argument("--among", choices=("allowed", "positive"), default="positive")
    ap.add_argument("--floor", type=float, default=0.02)
    ap.add_argument(
        "--promote",
        choices=("rule", "always"),
        default="rule",
        help="rule: `winback promote` (better with confidence); always: `winback promote "
        "--force`, so every round plays the newest model",
    )
    ap.add_argument(
        "--diagnose",
        action="store_true",
        help="per round: each option's true vs model value and the segment oracle's share",
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="winback-loop-") as tmp:
        folder = Path(tmp)
        settings = Settings(mlruns_dir=folder / "mlruns")
        world = generate_world(args.customers, args.world_seed)
        base = write_world(world, folder / "world")
        url = f"sqlite:///{folder / 'store.db'}"
        upgrade_database(url)
        store = Store.from_url(url)
        floor = args.floor if args.among == "positive" else 0.0
        policy = parse_policy(
            POLICY.replace(
                "EXPLORATION", f"{{epsilon: {args.epsilon}, among: {args.among}, floor: {floor}}}"
            )
        )
        options = OptionSet.from_catalog(world.catalog, policy.offer_budget_defaults)
        decider = Decider(options, policy, None, ContactCaps.from_policy(policy.frequency))
        data = load_data_dir(base)
        rng = np.random.default_rng(args.world_seed)
        first = pd.Timestamp(world.config.end).to_pydatetime() + timedelta(days=1, hours=9)
        print(
            f"{args.customers:,} customers, world seed {args.world_seed}, "
            f"{args.rounds} rounds, waves {args.days_between} days apart, {args.bags} bags, "
            f"exploration {policy.exploration!r}, holdout {policy.holdout.share}, "
            f"crossfit {args.crossfit}, z {'chosen' if args.z is None else args.z}, "
            f"promote {args.promote}"
        )
        print(
            f"{'round':>5} {'model':>18} {'contacts':>9} {'true/contact':>13} "
            f"{'true/eligible':>14} {'oracle/elig.':>13} {'share':>7} {'greedy':>7} "
            f"{'ceiling':>8} {'s':>5}"
        )
        shares, per_contact = [], []
        others: dict[str, Decider] = {}
        for r in range(args.rounds + 1):
            t0 = time.perf_counter()
            at = first + timedelta(days=r * args.days_between)
            label = "rules-only"
            if r > 0:
                out = folder / f"export-{r}"
                export_log(store, out, base=base)
                trained = train(
                    out,
                    seed=args.seed,
                    settings=settings,
                    n_bags=args.bags,
                    crossfit=args.crossfit,
                    z=args.z,
                )
                promoted = promote(
                    out, seed=args.seed, settings=settings, force=args.promote == "always"
                )
                champion = get_alias(CHAMPION, settings.model_name)
                assert champion is not None
                model = load_policy_model(champion.uri)
                decider = Decider(
                    options,
                    policy,
                    PolicyScorer(model, f"{settings.model_name}/{champion.version}"),
                    decider.base_caps,
                )
                # every other version trained so far (the champion replaced, the challengers
                # kept out), for the diagnosis's greedy comparison on this round's customers
                others = {
                    f"v{v}": Decider(
                        options,
                        policy,
                        PolicyScorer(
                            load_policy_model(f"models:/{settings.model_name}/{v}"),
                            f"{settings.model_name}/{v}",
                        ),
                        decider.base_caps,
                    )
                    for v in range(1, int(trained.version) + 1)
                    if str(v) != champion.version and args.diagnose
                }
                kept = "" if promoted.promoted else f" kept v{champion.version}"
                label = f"v{trained.version}{kept}"
                print(
                    f"      promote v{trained.version}: {promoted.reason}; champion "
                    f"v{champion.version}: {model.metadata.get('response_learner')}, "
                    f"z {model.z}, default {model.default_option}",
                    flush=True,
                )
            oracle, ceiling, greedy = oracle_and_eligible(
                world,
                data,
                decider,
                store,
                at,
                folder / "oracle-snapshot",
                args.diagnose,
                others,
            )
            wave = Wave(f"loop-w{r}", at, "auto")
            until = at + timedelta(days=args.days_between)
            truth, data = play_wave(
                world, data, decider, store, wave, until, folder / "snapshot", rng
            )
            played = float(truth.margins.sum()) / max(len(oracle), 1)
            best = float(oracle.mean()) if len(oracle) else float("nan")
            share = played / best if best > 0 else float("nan")
            shares.append(share)
            per_contact.append(truth.incremental_margin_per_contact or 0.0)
            print(
                f"{r:>5} {label:>18} {truth.contacts:>9,} "
                f"{truth.incremental_margin_per_contact or float('nan'):>+13.3f} "
                f"{played:>+14.3f} {best:>+13.3f} {share:>7.1%} "
                f"{float(greedy.mean()) / best:>7.1%} {float(ceiling.mean()) / best:>8.1%} "
                f"{time.perf_counter() - t0:>5.0f}",
                flush=True,
            )
        store.dispose()
    rising = all(b > a for a, b in itertools.pairwise(per_contact))
    print(
        f"true margin per contact rises every round: {'yes' if rising else 'NO'}; "
        f"last round {shares[-1]:.1%} of the oracle (bar: 80%; a perfect model under the "
        "policy's exploration: the ceiling column)"
    )


if __name__ == "__main__":
    main()
