"""JUnit XML for CI systems: one test case per threshold, plus one for sanity errors and one per regression."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from bastion.reports.report import Report


def render_junit(report: Report, regressions: Sequence[str] = ()) -> str:
    suite = ET.Element("testsuite", name=f"bastion assess: {report.policy.get('name', 'policy')}")
    failures = skipped = 0
    for c in report.checks:
        case = ET.SubElement(suite, "testcase", classname="bastion.thresholds", name=c["rule"])
        case.set("time", "0")
        if c["status"] == "fail":
            failures += 1
            ET.SubElement(case, "failure", message=f"measured {c['value']:.4g}").text = c["rule"]
        elif c["status"] == "inconclusive":
            skipped += 1  # JUnit has no "inconclusive"; an error, so that no CI shows it green
            ET.SubElement(case, "error", message=f"inconclusive: {c.get('reason', '')}")
    errors = [f for f in report.sanity if f["severity"] == "error"]
    accepted = set(report.policy.get("accept_sanity", []))
    for f in errors:
        case = ET.SubElement(suite, "testcase", classname="bastion.sanity", name=f["check"])
        if f["check"] not in accepted:
            failures += 1
            ET.SubElement(case, "failure", message=f["message"])
    for r in regressions:
        case = ET.SubElement(suite, "testcase", classname="bastion.baseline", name=r)
        failures += 1
        ET.SubElement(case, "failure", message=f"regression: {r}")
    suite.set("tests", str(len(suite)))
    suite.set("failures", str(failures))
    suite.set("errors", str(skipped))
    return ET.tostring(suite, encoding="unicode", xml_declaration=True)


def write_junit(report: Report, path: Path, regressions: Sequence[str] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_junit(report, regressions))
    return path
