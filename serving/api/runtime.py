"""Everything the request path needs, loaded once and swapped as one object on reload.

`Runtime` is immutable: a request takes `app.state.runtime` once and keeps a consistent
policy, catalog, option set and scorer to the end, while `POST /admin/reload` builds a new
`Runtime` completely before replacing the reference (a failed reload leaves the old one).
The snapshot handle has its own atomic swap (`features.snapshot.SnapshotStore`).

A reload is all or nothing: the policy, the catalog and the model must all load (a model URI
with nothing behind it, or a package that fails to load, is refused with `ReloadRefusedError`
rather than switching the service to rules only), and the snapshot refresh, when asked for,
must succeed; otherwise nothing changes and the error says what could not be loaded.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Protocol

from features.offers import OfferCatalog, load_catalog
from features.snapshot import Snapshot, SnapshotError, SnapshotStore
from serving.api.decision_thread import DecisionThread
from serving.api.metrics import Metrics
from serving.decide import Decider
from serving.engine import OptionSet
from serving.errors import ServingError
from serving.policy import Policy, load_policy
from serving.scoring import Scorer, ScorerLoader, load_scorer, no_model_loader
from serving.settings import ServingSettings
from serving.store import ContactCaps, Store
from serving.store.health import StoreProbe

log = logging.getLogger("winback.api")

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """Timezone-naive UTC now (the store's convention), to the microsecond."""
    return datetime.now(UTC).replace(tzinfo=None)


def brief(error: object, limit: int = 300) -> str:
    """An error's text fit for an HTTP body: its first line, without a SQL statement.

    A model that fails to load can fail inside MLflow's own store, whose SQLAlchemy errors
    carry the statement (`[SQL: ...]`) and a link on further lines; those stay in the log.
    """
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    text = text.split("[SQL:", 1)[0].rstrip()
    return text if len(text) <= limit else text[: limit - 3] + "..."


class ReloadRefusedError(ServingError):
    """A reload asked for something that cannot be loaded; the running service is unchanged.

    `field` names what failed (`model_uri` or `snapshot`).
    """

    code = "reload_refused"

    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.field = field


class SnapshotSource(Protocol):
    """What the API needs of a snapshot handle (`features.snapshot.SnapshotStore` fits)."""

    def current(self) -> Snapshot: ...

    def refresh(self) -> bool: ...


@dataclass(frozen=True, eq=False)
class Runtime:
    """The loaded service: store, policy, catalog, options, snapshot handle and scorer."""

    settings: ServingSettings
    store: Store
    policy: Policy
    catalog: OfferCatalog
    options: OptionSet
    base_caps: ContactCaps
    snapshots: SnapshotSource
    scorer: Scorer | None
    model_uri: str
    model_error: str | None
    scorer_loader: ScorerLoader
    metrics: Metrics
    store_probe: StoreProbe
    clock: Clock = utc_now
    decision_thread: DecisionThread | None = None
    """The worker's decision thread (the app's; kept by a reload), or None: decided on the
    caller's thread (runtimes built outside an app)."""

    def snapshot(self) -> Snapshot | None:
        """The live snapshot, or None when there is none (every customer is then unknown).

        Without one, the handle does not read the disk again until its next refresh (the
        watcher's interval), and `/readyz` says why (`snapshot_problem`).
        """
        try:
            return self.snapshots.current()
        except SnapshotError:
            return None

    def snapshot_problem(self) -> str | None:
        """Why the snapshot could not be loaded or refreshed, or None."""
        try:
            self.snapshots.current()
        except SnapshotError as exc:
            return brief(exc)
        error = getattr(self.snapshots, "error", None)  # a refresh that failed, old one kept
        return brief(error) if error is not None else None

    @property
    def model_version(self) -> str | None:
        return self.scorer.version if self.scorer is not None else None

    @cached_property
    def decider(self) -> Decider:
        """What the engine needs besides the customers (built once per runtime)."""
        return Decider(self.options, self.policy, self.scorer, self.base_caps)

    @cached_property
    def budgeted_offers(self) -> tuple[str, ...]:
        """The offers with a budget (their usage is read for every decision)."""
        opts = self.options
        return tuple(o for o, b in zip(opts.offer_ids, opts.budgets, strict=True) if b)


def build_runtime(
    settings: ServingSettings,
    store: Store,
    metrics: Metrics,
    scorer_loader: ScorerLoader | None = None,
    snapshots: SnapshotSource | None = None,
    clock: Clock = utc_now,
    decision_thread: DecisionThread | None = None,
) -> Runtime:
    """Load policy, catalog and model per `settings` (errors name the file and the key)."""
    policy = load_policy(settings.policy_path)
    catalog = load_catalog(Path(settings.catalog_path))
    loader = scorer_loader or no_model_loader
    scorer, error = load_scorer(loader, settings.model_uri)
    if error:
        log.warning("model unavailable, deciding by rules only: %s", error)
    return Runtime(
        settings=settings,
        store=store,
        policy=policy,
        catalog=catalog,
        options=OptionSet.from_catalog(catalog, policy.offer_budget_defaults),
        base_caps=ContactCaps.from_policy(policy.frequency),
        snapshots=snapshots or SnapshotStore(Path(settings.snapshot_dir)),
        scorer=scorer,
        model_uri=settings.model_uri,
        model_error=error,
        scorer_loader=loader,
        metrics=metrics,
        store_probe=StoreProbe(store.engine),
        clock=clock,
        decision_thread=decision_thread,
    )


def reloaded(
    rt: Runtime,
    model_uri: str | None = None,
    policy_path: str | None = None,
    catalog_path: str | None = None,
    refresh_snapshot: bool = True,
) -> tuple[Runtime, bool]:
    """A new runtime with the policy, catalog and model reloaded; (runtime, snapshot swapped).

    Everything must load, or nothing changes: PolicyError / OfferCatalogError for the policy
    and catalog, `ReloadRefusedError` for a model that cannot be loaded (asked for, or the
    one serving now) or a failed snapshot refresh (the snapshot is refreshed last, after
    everything else has loaded). An empty model URI means rules only, by choice.
    """
    settings = rt.settings.model_copy(
        update={
            k: v
            for k, v in (
                ("model_uri", model_uri),
                ("policy_path", Path(policy_path) if policy_path else None),
                ("catalog_path", Path(catalog_path) if catalog_path else None),
            )
            if v is not None
        }
    )
    policy = load_policy(settings.policy_path)
    catalog = load_catalog(Path(settings.catalog_path))
    scorer, error = load_scorer(rt.scorer_loader, settings.model_uri)
    # Refused when it would lose a loaded model or when this model was asked for; a service
    # already rules-only because its configured model is missing may reload the rest.
    if scorer is None and settings.model_uri and (model_uri is not None or rt.scorer):
        still = f"still serving {rt.model_version}" if rt.scorer else "still rules only"
        raise ReloadRefusedError(
            f"model_uri: cannot load {settings.model_uri!r}, nothing changed ({still}): "
            f"{brief(error)}",
            "model_uri",
        )
    swapped = False
    if refresh_snapshot:
        try:
            swapped = rt.snapshots.refresh()
        except SnapshotError as exc:
            raise ReloadRefusedError(
                f'snapshot: refresh failed, nothing changed (reload with "snapshot": false '
                f"to apply the rest without it): {brief(exc)}",
                "snapshot",
            ) from None
    new = replace(
        rt,
        settings=settings,
        policy=policy,
        catalog=catalog,
        options=OptionSet.from_catalog(catalog, policy.offer_budget_defaults),
        base_caps=ContactCaps.from_policy(policy.frequency),
        scorer=scorer,
        model_uri=settings.model_uri,
        model_error=error,
    )
    return new, swapped
