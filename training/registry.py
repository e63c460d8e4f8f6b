"""The model registry: versions of `winback-policy` and the aliases serving reads.

Training registers every new version with the alias `challenger`; promotion moves `champion`.
Serving loads `models:/winback-policy@champion`, never "the best run found by search".
"""

from __future__ import annotations

from dataclasses import dataclass

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from training.errors import RegistryError

MODEL_NAME = "winback-policy"
CHAMPION = "champion"
CHALLENGER = "challenger"


def alias_uri(alias: str, name: str = MODEL_NAME) -> str:
    return f"models:/{name}@{alias}"


@dataclass(frozen=True)
class VersionInfo:
    """What the registry knows of one version."""

    name: str
    version: str
    run_id: str
    source: str
    aliases: tuple[str, ...]

    @property
    def uri(self) -> str:
        return f"models:/{self.name}/{self.version}"


def _client() -> MlflowClient:
    return MlflowClient()


def get_alias(alias: str, name: str = MODEL_NAME) -> VersionInfo | None:
    """The version holding `alias`, or None when the model or alias does not exist."""
    try:
        mv = _client().get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    return VersionInfo(name, str(mv.version), mv.run_id or "", mv.source or "", tuple(mv.aliases))


def set_alias(alias: str, version: str, name: str = MODEL_NAME) -> None:
    """Point `alias` at `version`."""
    try:
        _client().set_registered_model_alias(name, alias, version)
    except MlflowException as exc:
        raise RegistryError(
            f"cannot set alias '{alias}' on {name} v{version}: {exc.message}"
        ) from None


def set_version_tags(version: str, tags: dict[str, str], name: str = MODEL_NAME) -> None:
    client = _client()
    try:
        for key, value in tags.items():
            client.set_model_version_tag(name, version, key, value)
    except MlflowException as exc:
        raise RegistryError(f"cannot tag {name} v{version}: {exc.message}") from None
