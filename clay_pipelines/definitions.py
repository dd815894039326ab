"""The one root: every domain's definitions merged, and the policies applied once (retries,
automation, executor: clay_pipelines/policies.py).

A domain is a folder whose defs.py exports `defs` (its assets, checks, jobs, schedules, sensors and
the resources it owns); adding one is that folder and one entry in DOMAINS.
"""

import dagster as dg

from clay_pipelines.governance import defs as governance
from clay_pipelines.lifecycle import defs as lifecycle
from clay_pipelines.payroll import defs as payroll
from clay_pipelines.platform import defs as platform
from clay_pipelines.policies import apply_policies
from clay_pipelines.routing import defs as routing
from clay_pipelines.tars import defs as tars

DOMAINS = (platform, payroll, routing, tars, lifecycle, governance)

defs = apply_policies(dg.Definitions.merge(*(domain.defs for domain in DOMAINS)))
