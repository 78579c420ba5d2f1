"""The record of a run: hash-chained event log, manifest, verification and rendered reports."""

from bench.record.chain import GENESIS, EventLog
from bench.record.html import write_report_html
from bench.record.junit import write_junit
from bench.record.manifest import file_sha256, write_manifest
from bench.record.verify import Problem, verify_run

__all__ = [
    "GENESIS",
    "EventLog",
    "Problem",
    "file_sha256",
    "verify_run",
    "write_junit",
    "write_manifest",
    "write_report_html",
]
