"""docs/interop.md: its Collector configurations are YAML a Collector could load, and the one
taking reports to Kafka wires the OTLP receiver to the kafka exporter in a metrics pipeline."""

from __future__ import annotations

import re
from typing import Any

import yaml

from tests.support.servicetools import REPO

INTEROP = REPO / "docs" / "interop.md"


def yaml_blocks() -> list[Any]:
    blocks = re.findall(r"^```yaml\n(.*?)^```", INTEROP.read_text(), flags=re.M | re.S)
    return [yaml.safe_load(block) for block in blocks]


def collector_configs() -> list[dict[str, Any]]:
    return [block for block in yaml_blocks() if isinstance(block, dict) and "service" in block]


def test_every_yaml_block_parses() -> None:
    assert len(yaml_blocks()) >= 3


def test_reports_to_kafka_pipeline_is_otlp_receiver_to_kafka_exporter() -> None:
    [config] = [c for c in collector_configs() if "kafka" in c.get("exporters", {})]
    pipeline = config["service"]["pipelines"]["metrics"]
    assert pipeline == {"receivers": ["otlp"], "exporters": ["kafka"]}
    assert "grpc" in config["receivers"]["otlp"]["protocols"]
    assert config["exporters"]["kafka"]["metrics"]["encoding"] in ("otlp_json", "otlp_proto")


def test_every_component_a_whole_config_names_is_defined() -> None:
    # The exporter snippets at the top are fragments to merge into a config: skipped.
    whole = [config for config in collector_configs() if "receivers" in config]
    assert len(whole) >= 2
    for config in whole:
        for pipeline in config["service"]["pipelines"].values():
            for kind in ("receivers", "processors", "exporters"):
                for name in pipeline.get(kind, []):
                    assert name in config.get(kind, {}), (kind, name)
