"""Subject names, as Confluent's subject name strategies make them (and Apicurio's and Karapace's follow)."""

from __future__ import annotations

from pipelines.config.registry import SubjectStrategy

__all__ = ["subject_name"]


def subject_name(strategy: SubjectStrategy, topic: str, record_name: str) -> str:
    """``topic`` -> ``<topic>-value``; ``record`` -> the record's full name; ``topic_record`` ->
    ``<topic>-<record full name>`` (record values only: eventray writes no keyed schemas)."""
    if strategy == "topic":
        return f"{topic}-value"
    if strategy == "record":
        return record_name
    return f"{topic}-{record_name}"
