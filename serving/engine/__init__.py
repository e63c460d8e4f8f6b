"""The decision engine: guardrails (pure rules) + scores -> one decision per customer.

Typical use::

    from serving.engine import CustomerBatch, OptionSet, decide

    options = OptionSet.from_catalog(catalog, policy.offer_budget_defaults)   # once
    batch = CustomerBatch.from_features(rows, feature_set, ids, as_of, known, live)
    result = decide(batch, options, policy, scores, now, channel="auto", decision_key=rid)
    decision = result.decision(0)
"""

from serving.engine.decision import Decision, DecisionBatch, Excluded, Replaced
from serving.engine.engine import AUTO, Scores, decide
from serving.engine.errors import EngineInputError
from serving.engine.options import OptionSet
from serving.engine.state import CustomerBatch, LiveContact, LivePreferences, LiveState

__all__ = [
    "AUTO",
    "CustomerBatch",
    "Decision",
    "DecisionBatch",
    "EngineInputError",
    "Excluded",
    "LiveContact",
    "LivePreferences",
    "LiveState",
    "OptionSet",
    "Replaced",
    "Scores",
    "decide",
]
