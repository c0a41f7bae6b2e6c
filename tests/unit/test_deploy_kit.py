"""The deploy kit names what the worker really reads and exports: settings in the manifests, metrics in
the dashboard."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from processor.worker.metrics import WorkerMetrics
from slotguard.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"


def _documents() -> list[dict[str, object]]:
    docs: list[dict[str, object]] = []
    for path in sorted(KUBE.glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]
    return docs


def test_every_manifest_parses_and_the_kustomization_lists_the_others() -> None:
    docs = _documents()
    kinds = {str(d.get("kind")) for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "PodDisruptionBudget", "Kustomization", "Secret"} <= kinds
    (kustomization,) = [d for d in docs if d.get("kind") == "Kustomization"]
    resources: list[str] = kustomization["resources"]  # type: ignore[assignment]
    for resource in resources:
        assert (KUBE / resource).exists(), resource


def test_every_variable_the_manifests_set_is_a_setting() -> None:
    known = {f"SLOTGUARD_{name.upper()}" for name in Settings.model_fields}
    used: set[str] = set()
    for doc in _documents():
        if doc.get("kind") in ("ConfigMap", "Secret"):
            data: dict[str, str] = doc.get("data") or doc.get("stringData") or {}  # type: ignore[assignment]
            used |= set(data)
    assert used
    assert used - known == set()


def test_every_metric_the_dashboard_queries_is_exported() -> None:
    families = {family.name for family in WorkerMetrics().registry.collect()}
    dashboard = json.loads(
        (ROOT / "deploy" / "grafana" / "slotguard-worker.json").read_text(encoding="utf-8")
    )
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"slotguard_[a-z_]+", target["expr"])
    }
    assert queried
    missing = {name for name in queried if re.sub(r"_(total|bucket|sum|count)$", "", name) not in families}
    assert missing == set()
