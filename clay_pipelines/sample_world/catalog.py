"""What the sample world is made of: tenants, the seven skills, kinds of request and how each
skill really performs on each kind. Plain data; the generator draws from it with a seeded RNG."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from clay_pipelines.tars.decision import DEFAULT_RULE

# ---------------------------------------------------------------------------------------------
# Tenants


@dataclass(frozen=True)
class TenantSpec:
    name: str
    domain: str
    subscription_tier: str
    max_users: int
    max_monthly_budget: Decimal
    traffic_share: float  # share of all executions
    cost_multiplier: float  # heavier or lighter prompts than average


TENANTS: tuple[TenantSpec, ...] = (
    TenantSpec("OMS Consulting", "oms.com", "enterprise", 178, Decimal("5000.00"), 0.62, 1.0),
    TenantSpec("Northwind Analytics", "northwind.io", "pro", 50, Decimal("2500.00"), 0.25, 1.3),
    TenantSpec("Blue Harbor Clinics", "blueharbor.health", "starter", 10, Decimal("1000.00"), 0.13, 2.4),
)

# The sample world's TARS declares tars/decision.py's default rule with wider cost and duration
# margins (25% instead of 10%): its history never logged some (micro-cluster, skill) pairs a changed
# threshold reaches, valued at the dearest and slowest execution observed, and at 10% that worst
# case alone would stop any change of the router, even one that costs less. Its minimum detectable
# effect is the size of the improvement its tenants care about, 2 points of success (the world's
# better threshold is worth about that), not the default 5.
SAMPLE_DECISION_RULE: dict[str, Any] = {
    **DEFAULT_RULE,
    "mde": 0.02,
    "guardrails": {
        **DEFAULT_RULE["guardrails"],
        "cost_per_request": {"tolerance": 0.25, "relative": True},
        "mean_duration_ms": {"tolerance": 0.25, "relative": True},
    },
}

# ---------------------------------------------------------------------------------------------
# Skills (the systems registry). Platform-wide: tenant_id NULL, readable by every tenant.

# Every skill's own runtime parameters (the skills read them; nothing in this project does).
SKILL_PARAMETERS: dict[str, Any] = {
    "fallback_delay_ms": 500,
    "max_retries": 2,
    "timeout_ms": 30000,
    "temperature": 0.2,
    "context_window_tokens": 8000,
}


@dataclass(frozen=True)
class SystemSpec:
    name: str
    type: str
    description: str
    capabilities: tuple[str, ...]
    domain: str
    prime_directives: tuple[str, ...]
    requires_approval: tuple[str, ...]
    covenant: str
    deployment_type: str
    endpoint_url: str
    depends_on: tuple[str, ...] = ()
    api_key_required: bool = True
    extra_parameters: dict[str, Any] = field(default_factory=dict)
    tunables: dict[str, dict[str, Any]] = field(default_factory=dict)  # what automated changes may touch

    def constitution(self) -> dict[str, Any]:
        out = {
            "skill": self.name,
            "version": "1.0.0",
            "domain": self.domain,
            "prime_directives": list(self.prime_directives),
            "requires_approval": list(self.requires_approval),
            "covenant": self.covenant,
            "parameters": {**SKILL_PARAMETERS, **self.extra_parameters},
        }
        if self.tunables:
            out["tunables"] = self.tunables
        return out


SYSTEMS: tuple[SystemSpec, ...] = (
    SystemSpec(
        "clay-consigliere",
        "agent",
        "Clay, the router: understands a request, picks the skill, chains skills, answers general questions",
        ("routing", "conversation", "planning", "delegation", "general-questions"),
        "Orchestration",
        ("MVP Protocol", "Route to the specialist", "Ask when unsure"),
        ("delete",),
        "Every request finds its skill. Learn from every route.",
        "fastapi",
        "https://clay.internal/api/route",
        depends_on=("domicile-governance", "personaplex-7b", "memvid"),
        # The router's settings: read by routing/router.py and the rule learner.
        extra_parameters={
            "routing_confidence_threshold": 0.7,
            "capability_match_threshold": 0.35,
            "min_rule_executions": 50,
            "catch_all": True,
        },
        tunables={
            "routing_confidence_threshold": {"type": "number", "min": 0.05, "max": 0.95, "step": 0.05},
            "capability_match_threshold": {"type": "number", "min": 0.1, "max": 0.8, "step": 0.05},
            "min_rule_executions": {"type": "integer", "min": 20, "max": 200, "step": 10},
        },
    ),
    SystemSpec(
        "domicile-governance",
        "component",
        "BambooHR payroll processing, PDF extraction, compliance auditing",
        ("payroll", "compliance", "pdf-processing", "bamboohr", "dual-write", "employee-directory"),
        "HR/Payroll/Compliance",
        ("MVP Protocol", "Compliance Sovereign"),
        ("upload_payroll_entries", "audit", "delete"),
        "Profit from errors. Dual-write. ARM mode for writes.",
        "local",
        "/home/mcp-agent/mcp-servers/payroll/",
    ),
    SystemSpec(
        "personaplex-7b",
        "product",
        "Local 7B language model with house personas: drafting, rewriting, summarising, translating",
        ("writing", "drafting", "summarization", "translation", "tone-rewrite"),
        "Language/Writing",
        ("Stay on voice", "Never send on the user's behalf"),
        (),
        "Write like the firm. Keep it local.",
        "local",
        "http://127.0.0.1:8088/v1",
        api_key_required=False,
        extra_parameters={"temperature": 0.6},
    ),
    SystemSpec(
        "memvid",
        "component",
        "Long-term memory: semantic search over past meetings, documents and decisions",
        ("memory", "semantic-search", "recall", "knowledge-base", "document-retrieval"),
        "Knowledge/Memory",
        ("Cite the source", "Forget on request"),
        ("delete",),
        "Remember everything, cite everything.",
        "lambda",
        "https://memvid.internal/query",
    ),
    SystemSpec(
        "tars",
        "agent",
        "TARS, the optimiser: nightly experiments on skill settings, performance reviews, promotions",
        ("optimization", "experimentation", "performance-analysis", "dream-cycles"),
        "Self-improvement",
        ("Experiment offline", "Promote only on evidence", "Always keep a rollback"),
        ("promote", "rollback"),
        "Dream at night, ship on evidence.",
        "local",
        "/opt/tars/",
        depends_on=("clay-consigliere",),
        # How TARS dreams, declared before any data: how many mutations a skill gets a night, the
        # replay window, how long a promotion is watched, and the decision rule. Half B needs about
        # 1,200 requests to detect the rule's MDE of 2 points with power 0.90 at Holm's first level
        # (at the spread of the paired differences the replays show, 0.19): about 60 days of the
        # largest tenant (40 requests a day), 130 of the next (18). 120 days; at 28, a 2-point gain
        # was confirmed on some nights and not on others.
        extra_parameters={
            "mutations_per_system": 10,
            "replay_window_days": 120,
            "watch_days": 7,
            "dream_decision_rule": SAMPLE_DECISION_RULE,
        },
    ),
    SystemSpec(
        "ledger-lens",
        "product",
        "Finance analytics: expense reports, invoice matching, budget and spend tracking",
        ("finance", "expenses", "invoices", "budgeting", "spend-analytics"),
        "Finance",
        ("Every number has a source", "Flag, never fix silently"),
        ("approve_invoice",),
        "Money in, money out, nothing unexplained.",
        "vercel",
        "https://ledger-lens.vercel.app/api",
        depends_on=("memvid",),
    ),
    SystemSpec(
        "notion-scribe",
        "utility",
        "Notion MCP bridge: meeting notes, task lists, project pages and their updates",
        ("notion", "meeting-notes", "tasks", "project-pages", "documentation"),
        "Workspace/Notes",
        ("One page per decision",),
        (),
        "Write it down where the team looks.",
        "n8n",
        "https://n8n.internal/webhook/notion",
        depends_on=("personaplex-7b",),
    ),
)

CATCH_ALL_SYSTEM = "clay-consigliere"

# ---------------------------------------------------------------------------------------------
# Kinds of request. Each has many phrasings (templates x slot values x prefixes x typos), the share
# of traffic the router historically sent to each skill, and how each skill really performs.
# Every kind says how the catch-all performs on it, so that any routing policy has a true value.
# The catch-all is a generalist: on kinds a specialist serves (writing, summaries, translations,
# notes, invoices) it does clearly worse. Requests that fall back to it because their best rule
# scored just under routing_confidence_threshold would do better with the rule's system, so a
# threshold one or two steps lower is genuinely better for the tenants (changing the system of about
# 5% of requests), a higher one worse, and the capability threshold makes no difference: the
# router setting the dream cycle should find.


@dataclass(frozen=True)
class Performance:
    success: float  # probability of status 'success'
    satisfaction: float  # mean stars when rated
    cost_usd: float  # mean cost
    duration_ms: float  # median duration


@dataclass(frozen=True)
class IntentSpec:
    name: str
    weight: float
    templates: tuple[str, ...]
    routed_to: dict[str, float]  # historical routing shares
    performance: dict[str, Performance]
    approval_action: str | None = None  # the constitution action that needs ARM approval


SLOTS: dict[str, tuple[str, ...]] = {
    "period": (
        "this week",
        "last week",
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
        "Q1",
        "Q2",
        "Q3",
        "Q4",
        "the 15th",
        "month end",
        "this pay period",
        "the last two weeks",
    ),
    "file": (
        "payroll-2026-01-27.pdf",
        "the ADP export",
        "register_oct.pdf",
        "paystubs.zip",
        "the scan Maria sent",
        "contractor_payments.pdf",
        "the Gusto report",
        "week42.pdf",
    ),
    "person": (
        "Maria Lopez",
        "John Doe",
        "Kevin McCoy",
        "Priya Natarajan",
        "Bob Whitfield",
        "Peg Olsen",
        "Dmitri Volkov",
        "Aisha Bello",
        "Tom Kowalski",
        "Sofia Álvarez",
        "Chen Wei",
        "Liam O'Brien",
    ),
    "state": ("Texas", "California", "New York", "Florida", "Ohio", "Georgia", "Washington"),
    "doc": (
        "the board deck",
        "the Q3 report",
        "this contract",
        "the vendor agreement",
        "the onboarding guide",
        "the incident postmortem",
        "the policy memo",
        "this article",
        "the RFP",
        "the audit findings",
    ),
    "audience": ("the client", "the team", "our CFO", "new hires", "the board", "a vendor", "the landlord"),
    "topic": (
        "the pricing change",
        "the office move",
        "holiday schedule",
        "the Q4 targets",
        "the hiring freeze",
        "the migration to Supabase",
        "the new PTO policy",
        "the Henderson account",
        "the outage on Monday",
    ),
    "meeting": (
        "yesterday's standup",
        "the Henderson kickoff",
        "last week's all-hands",
        "the budget review",
        "Monday's leadership sync",
        "the vendor call",
        "the design review",
        "the retro",
    ),
    "project": ("Atlas", "the website relaunch", "Henderson onboarding", "the Q4 audit", "Project Falcon", "HR portal"),
    "vendor": ("AWS", "Staples", "Delta", "Uber", "WeWork", "Adobe", "Zoom", "the caterer"),
    "lang": ("Spanish", "French", "German", "Portuguese", "Japanese", "Italian"),
    "skill": ("the router", "payroll processing", "the summariser", "memvid search", "ledger-lens"),
    "amount": ("$250", "$1,200", "$89.99", "$4,250", "$15k", "$600"),
}

PREFIXES: tuple[str, ...] = (
    "",
    "",
    "",
    "",
    "",
    "hey clay, ",
    "clay ",
    "pls ",
    "please ",
    "can you ",
    "could you ",
    "I need to ",
    "quick one: ",
    "urgent: ",
    "when you get a chance, ",
    "hi! ",
    "need you to ",
)
SUFFIXES: tuple[str, ...] = (
    "",
    "",
    "",
    "",
    "",
    "",
    "?",
    " asap",
    " thanks",
    " please",
    " by EOD",
    " for the board meeting",
    " before Friday",
    " 🙏",
    " again",
    ".",
)


def _perf(success: float, satisfaction: float, cost: float, duration_ms: float) -> Performance:
    return Performance(success, satisfaction, cost, duration_ms)


INTENTS: tuple[IntentSpec, ...] = (
    IntentSpec(
        "process_payroll",
        10,
        (
            "process payroll PDFs",
            "process the payroll for {period}",
            "run payroll for {period}",
            "upload the {period} payroll register",
            "import paystubs from {file}",
            "load {file} into BambooHR",
            "push {period} payroll to bamboo",
            "payroll run for {period}",
            "process {file}",
            "get {period} pay stubs into the system",
            "do the payroll upload for {period}",
            "enter contractor payments from {file}",
            "sync payroll entries for {period} with BambooHR",
        ),
        {"domicile-governance": 0.72, "clay-consigliere": 0.18, "ledger-lens": 0.10},
        {
            "domicile-governance": _perf(0.94, 4.5, 0.12, 850),
            "clay-consigliere": _perf(0.48, 2.6, 0.30, 2400),
            "ledger-lens": _perf(0.35, 2.2, 0.18, 1900),
        },
        approval_action="upload_payroll_entries",
    ),
    IntentSpec(
        "compliance_audit",
        5,
        (
            "audit payroll compliance",
            "run a compliance audit for {state}",
            "check {state} payroll compliance",
            "are we compliant with {state} wage laws",
            "audit the {period} payroll",
            "compliance check on {file}",
            "do we meet overtime rules in {state}",
            "prepare the {period} compliance audit",
            "flag payroll compliance issues for {period}",
        ),
        {"domicile-governance": 0.8, "clay-consigliere": 0.2},
        {
            "domicile-governance": _perf(0.9, 4.3, 0.25, 3100),
            "clay-consigliere": _perf(0.5, 2.9, 0.40, 4200),
        },
        approval_action="audit",
    ),
    IntentSpec(
        "employee_lookup",
        6,
        (
            "what is {person}'s employee id",
            "look up {person} in BambooHR",
            "find {person}'s employee record",
            "who is {person}'s manager",
            "when did {person} start",
            "is {person} a contractor",
            "get the employee number for {person}",
            "show me {person}'s pay history",
        ),
        {"domicile-governance": 0.6, "memvid": 0.3, "clay-consigliere": 0.1},
        {
            "domicile-governance": _perf(0.96, 4.6, 0.03, 400),
            "memvid": _perf(0.62, 3.1, 0.05, 700),
            "clay-consigliere": _perf(0.4, 2.5, 0.08, 1200),
        },
    ),
    IntentSpec(
        "draft_email",
        12,
        (
            "draft an email to {audience} about {topic}",
            "write a note to {audience} on {topic}",
            "compose a reply to {person} about {topic}",
            "help me write an email announcing {topic}",
            "email {audience} re {topic}",
            "write a polite follow up to {person}",
            "draft a message to {audience} explaining {topic}",
            "I need an email for {audience} about {topic}",
            "rewrite this email to {audience} so it sounds friendlier",
        ),
        {"personaplex-7b": 0.7, "clay-consigliere": 0.3},
        {
            "personaplex-7b": _perf(0.95, 4.4, 0.0, 1600),
            "clay-consigliere": _perf(0.25, 2.4, 0.22, 2600),
        },
    ),
    IntentSpec(
        "summarize_document",
        10,
        (
            "summarize {doc}",
            "give me a tl;dr of {doc}",
            "summarise {doc} in five bullets",
            "what are the key points of {doc}",
            "boil down {doc} for {audience}",
            "short summary of {doc} please",
            "executive summary of {doc}",
            "what does {doc} say about {topic}",
        ),
        {"personaplex-7b": 0.6, "memvid": 0.25, "clay-consigliere": 0.15},
        {
            "personaplex-7b": _perf(0.92, 4.3, 0.0, 2100),
            "memvid": _perf(0.7, 3.4, 0.06, 1300),
            "clay-consigliere": _perf(0.2, 2.3, 0.35, 3000),
        },
    ),
    IntentSpec(
        "translate_text",
        4,
        (
            "translate this into {lang}",
            "translate {doc} to {lang}",
            "how do you say this in {lang}",
            "put the email to {audience} in {lang}",
            "{lang} version of {doc} please",
        ),
        {"personaplex-7b": 0.85, "clay-consigliere": 0.15},
        {
            "personaplex-7b": _perf(0.93, 4.2, 0.0, 1400),
            "clay-consigliere": _perf(0.3, 2.5, 0.18, 2000),
        },
    ),
    IntentSpec(
        "recall_meeting",
        9,
        (
            "what did we decide in {meeting}",
            "what was said about {topic} in {meeting}",
            "find the notes from {meeting}",
            "remind me what {person} said in {meeting}",
            "search memory for {topic}",
            "when did we last discuss {topic}",
            "recall the action items from {meeting}",
            "what do we know about {project}",
            "dig up everything on {topic}",
        ),
        {"memvid": 0.65, "notion-scribe": 0.25, "clay-consigliere": 0.10},
        {
            "memvid": _perf(0.9, 4.4, 0.04, 900),
            "notion-scribe": _perf(0.6, 3.2, 0.02, 1500),
            "clay-consigliere": _perf(0.3, 2.4, 0.15, 2200),
        },
    ),
    IntentSpec(
        "meeting_notes",
        7,
        (
            "write up notes from {meeting}",
            "create a notion page for {meeting}",
            "post the minutes of {meeting}",
            "turn this transcript into meeting notes",
            "add {meeting} notes to the {project} page",
            "log decisions from {meeting} in notion",
        ),
        {"notion-scribe": 0.55, "personaplex-7b": 0.35, "clay-consigliere": 0.1},
        {
            "notion-scribe": _perf(0.93, 4.4, 0.03, 1200),
            "personaplex-7b": _perf(0.7, 3.5, 0.0, 2200),
            "clay-consigliere": _perf(0.25, 2.3, 0.12, 2300),
        },
    ),
    IntentSpec(
        "task_tracking",
        7,
        (
            "create a task for {person} to review {doc}",
            "add a todo: follow up with {vendor}",
            "what tasks are open on {project}",
            "assign {project} review to {person}",
            "move the {project} tasks to done",
            "remind {person} about {topic} on friday",
            "list overdue tasks for {project}",
        ),
        {"notion-scribe": 0.8, "clay-consigliere": 0.2},
        {
            "notion-scribe": _perf(0.95, 4.5, 0.02, 700),
            "clay-consigliere": _perf(0.55, 3.0, 0.10, 1800),
        },
    ),
    IntentSpec(
        "expense_report",
        8,
        (
            "file my {vendor} expense of {amount}",
            "create an expense report for {period}",
            "categorize the {vendor} receipts",
            "submit {amount} for the {vendor} trip",
            "how much did we spend on {vendor} in {period}",
            "reimburse {person} {amount} for {vendor}",
            "expense report for the {project} offsite",
        ),
        # Often mis-sent to the payroll skill, which handles it badly: something real to learn.
        {"ledger-lens": 0.55, "domicile-governance": 0.35, "clay-consigliere": 0.10},
        {
            "ledger-lens": _perf(0.93, 4.4, 0.08, 1100),
            "domicile-governance": _perf(0.38, 2.3, 0.15, 2600),
            "clay-consigliere": _perf(0.5, 2.8, 0.20, 2400),
        },
    ),
    IntentSpec(
        "invoice_processing",
        6,
        (
            "match the {vendor} invoice to the PO",
            "approve the {vendor} invoice for {amount}",
            "process invoices from {vendor}",
            "is the {vendor} invoice a duplicate",
            "which invoices are past due",
            "reconcile {period} invoices",
        ),
        {"ledger-lens": 0.65, "domicile-governance": 0.25, "clay-consigliere": 0.1},
        {
            "ledger-lens": _perf(0.9, 4.2, 0.10, 1500),
            "domicile-governance": _perf(0.42, 2.5, 0.14, 2900),
            "clay-consigliere": _perf(0.2, 2.2, 0.20, 2600),
        },
        approval_action="approve_invoice",
    ),
    IntentSpec(
        "budget_status",
        5,
        (
            "how much budget is left for {period}",
            "are we over budget on {project}",
            "show spend vs budget for {period}",
            "what's our burn rate",
            "forecast spend for {period}",
            "budget summary for {project}",
        ),
        {"ledger-lens": 0.75, "clay-consigliere": 0.25},
        {
            "ledger-lens": _perf(0.94, 4.3, 0.06, 900),
            "clay-consigliere": _perf(0.6, 3.1, 0.16, 2100),
        },
    ),
    IntentSpec(
        "optimise_skill",
        3,
        (
            "why is {skill} slow",
            "tune {skill}",
            "run an experiment on {skill} tonight",
            "how has {skill} performed this week",
            "can we make {skill} cheaper",
            "review the routing accuracy for {period}",
        ),
        {"tars": 0.8, "clay-consigliere": 0.2},
        {
            "tars": _perf(0.88, 4.1, 0.45, 5200),
            "clay-consigliere": _perf(0.4, 2.6, 0.25, 2500),
        },
        approval_action="promote",
    ),
    IntentSpec(
        "general_chat",
        8,
        (
            "what can you do",
            "hello",
            "plan my week",
            "what should I focus on today",
            "help me prioritize {project} vs {topic}",
            "brainstorm ideas for {topic}",
            "what's the status of {project}",
            "who should I ask about {topic}",
            "explain {topic} like I'm new here",
        ),
        {"clay-consigliere": 0.85, "personaplex-7b": 0.15},
        {
            "clay-consigliere": _perf(0.9, 4.1, 0.09, 1500),
            "personaplex-7b": _perf(0.75, 3.6, 0.0, 1800),
        },
    ),
)

# ---------------------------------------------------------------------------------------------
# MCP servers and their tools: median latency, spread, baseline error rate.


@dataclass(frozen=True)
class ToolSpec:
    server: str
    tool: str
    median_ms: float
    sigma: float
    error_rate: float
    weight: float


TOOLS: tuple[ToolSpec, ...] = (
    ToolSpec("domicile-governance", "process_payroll_pdf", 1800, 0.5, 0.03, 6),
    ToolSpec("domicile-governance", "upload_payroll_entries", 6200, 0.35, 0.04, 4),  # slow: > 5 s
    ToolSpec("domicile-governance", "lookup_employee", 220, 0.4, 0.01, 8),
    ToolSpec("domicile-governance", "audit_compliance", 7400, 0.45, 0.06, 2),  # slow
    ToolSpec("bamboohr", "get_employee_directory", 650, 0.5, 0.02, 3),
    ToolSpec("bamboohr", "add_table_row", 480, 0.6, 0.03, 4),
    ToolSpec("notion", "create_page", 900, 0.5, 0.02, 6),
    ToolSpec("notion", "search_pages", 1300, 0.6, 0.02, 5),
    ToolSpec("notion", "update_database", 1100, 0.5, 0.05, 3),
    ToolSpec("memvid", "search_memory", 350, 0.5, 0.01, 9),
    ToolSpec("memvid", "store_memory", 500, 0.4, 0.01, 4),
    ToolSpec("ledger-lens", "categorize_expense", 700, 0.4, 0.02, 5),
    ToolSpec("ledger-lens", "reconcile_invoice", 2600, 0.6, 0.04, 3),
    ToolSpec("personaplex-7b", "generate", 1900, 0.5, 0.01, 9),
)

TOOL_ERRORS: dict[str, tuple[str, ...]] = {
    "default": ("upstream timeout after 30000 ms", "HTTP 502 from upstream", "connection reset by peer"),
    "bamboohr": ("HTTP 429 Too Many Requests", "HTTP 503 Service Unavailable", "HTTP 401 invalid API key"),
    "domicile-governance": (
        "PDF has no text layer (scanned?)",
        "encrypted PDF: password required",
        "total mismatch: extracted 52,430.15 vs printed 52,431.15",
    ),
    "notion": ("HTTP 429 rate limited", "object_not_found: page was archived", "HTTP 502 from Notion"),
}

# Bursts of errors: (server, tool, days before the anchor, length in hours, error rate during burst)
ERROR_BURSTS: tuple[tuple[str, str, int, int, float], ...] = (
    ("bamboohr", "add_table_row", 12, 6, 0.7),
    ("notion", "search_pages", 40, 3, 0.8),
    ("domicile-governance", "upload_payroll_entries", 3, 4, 0.6),
    ("ledger-lens", "reconcile_invoice", 95, 8, 0.5),
)
