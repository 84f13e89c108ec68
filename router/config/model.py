"""The centre's configuration as typed, immutable values.

`router.config.load_config()` turns `router.yaml` into a `Centre` after
validating every field (errors name file, line and column).  Everything else in
the router reads these objects, never raw YAML.  Times are seconds (float)
unless the name says otherwise; proficiencies are integers 1..10.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, time
from typing import Literal

Strategy = Literal["longest-idle", "most-skilled", "least-occupied", "round-robin", "fewest-calls", "random"]
STRATEGIES: tuple[str, ...] = ("longest-idle", "most-skilled", "least-occupied", "round-robin",
                               "fewest-calls", "random")

TerminalAction = Literal["voicemail", "transfer", "callback", "hangup"]
TERMINAL_ACTIONS: tuple[str, ...] = ("voicemail", "transfer", "callback", "hangup")

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


@dataclass(frozen=True)
class Skill:
    id: str
    name: str
    kind: Literal["skill", "language"] = "skill"


@dataclass(frozen=True)
class Agent:
    id: str
    name: str
    endpoint: str                      # e.g. "PJSIP/1001" or "Local/1001@agents"
    skills: dict[str, int]             # skill id -> proficiency 1..10
    team: str | None = None


@dataclass(frozen=True)
class OverflowStep:
    """One overflow rule of a queue.

    Timed steps (`after_s` set, `when` None) change how the call is matched
    once it has waited `after_s` seconds in the queue:
      - `relax`: skill -> new (lower) minimum proficiency
      - `add_skills`: an alternative requirement set (skill -> minimum)
      - `copy_to`: the call also waits for the agents of that queue
      - `move_to`: the call leaves for that queue, keeping its wait
    Conditional steps (`when` set) take the call out of the queue with a
    terminal `action` (voicemail, transfer to `target`, callback, hangup with
    `message`) when the condition holds:
      - "max_wait":     waited `value` seconds
      - "no_agents":    no logged-in agent can serve the queue (value unused)
      - "queue_length": on arrival, `value` or more calls already waiting
      - "ewt":          on arrival, estimated wait over `value` seconds
    """
    after_s: float | None = None
    relax: dict[str, int] = field(default_factory=dict)
    add_skills: dict[str, int] = field(default_factory=dict)
    copy_to: str | None = None
    move_to: str | None = None
    when: Literal["max_wait", "no_agents", "queue_length", "ewt"] | None = None
    value: float = 0.0
    action: TerminalAction | None = None
    target: str | None = None
    message: str | None = None


@dataclass(frozen=True)
class CallbackPolicy:
    """When a queue offers call-backs and how it dials them.

    A caller who accepts keeps their place: the call-back waits in the queue
    as a virtual entry that ages like a call and is matched like one.  When
    its turn comes the agent is dialled first (or the customer first), and a
    customer leg that fails is retried `retry_s` later, up to `max_attempts`.
    """
    offer_ewt_s: float | None = None     # offer while waiting once EWT passes this; None: on request only
    max_pending: int = 100               # pending call-backs this queue accepts at most
    retry_s: float = 300.0
    max_attempts: int = 3
    customer_first: bool = False
    prefixes: tuple[str, ...] = ()       # numbers must start with one of these (empty: any)
    min_digits: int = 6
    max_digits: int = 15
    hours: str | None = None             # schedule when call-backs are offered and dialled (None: the queue's)
    max_days_ahead: int = 7              # a scheduled call-back may be at most this many days away
    dial: str = "PJSIP/{number}@pstn"    # Asterisk dial string of the customer leg
    whisper: str | None = "callback-whisper"   # prompt the agent hears before the customer is dialled
    offer_flow: str = "callback_offer"   # IVR flow a holding caller runs to take (or decline) a call-back


@dataclass(frozen=True)
class HoldPolicy:
    """What a caller hears and may do while waiting on Asterisk.

    Music on hold of `moh_class`; every `announce_s` seconds their position
    and/or the estimated wait; `callback_key` runs the queue's call-back offer
    flow, `leave_key` takes them out of the queue to `leave_mailbox` (or hangs up).
    """
    moh_class: str = "default"
    announce_s: float = 30.0             # 0: no announcements
    announce_position: bool = True
    announce_ewt: bool = True
    callback_key: str | None = "1"       # only with a call-back policy
    leave_key: str | None = None
    leave_mailbox: str | None = None


@dataclass(frozen=True)
class Webhook:
    """An HTTP POST (JSON) to a CRM when a call of the queue is offered to an agent, so the
    CRM can pop the customer record; sent in the background, never delaying routing."""
    url: str
    timeout_s: float = 2.0
    retries: int = 2                   # further attempts after a failure, with backoff


@dataclass(frozen=True)
class RecordingPolicy:
    """A queue's call recording (docs/recording.md): which connected calls, in what form."""
    mode: Literal["all", "sample", "none"] = "none"
    sample_percent: float = 100.0      # mode sample: this share of calls, decided by a hash of the call id
    channels: Literal["stereo", "mixed"] = "stereo"   # stereo: caller left, agent right
    format: Literal["wav", "opus"] = "wav"            # opus: mixed only
    retention_days: int | None = None  # None: the centre's recording.retention_days
    announce: str | None = None        # prompt telling the caller they are recorded


@dataclass(frozen=True)
class RecordingSettings:
    """Where recordings are kept and for how long by default (the centre's `recording:`)."""
    directory: str = "recordings"      # the router's view; the loader makes it absolute
    retention_days: int = 90
    asterisk_directory: str | None = None   # the same directory as Asterisk sees it (chroot, container)


@dataclass(frozen=True)
class Queue:
    id: str
    name: str
    skills: dict[str, int]             # required skill -> minimum proficiency
    strategy: Strategy = "longest-idle"
    priority: int = 0                  # higher is served first
    weight: float = 1.0                # multiplies wait when an agent picks among queues
    sl_target: float = 0.8             # service level goal: sl_target answered within sl_threshold_s
    sl_threshold_s: float = 20.0
    wrap_up_s: float = 10.0
    ring_timeout_s: float = 15.0
    rona_pause: bool = True            # pause an agent who does not answer
    aht_estimate_s: float = 180.0      # seed of the EWT estimate until calls are measured
    schedule: str | None = None
    overflow: tuple[OverflowStep, ...] = ()
    callback: CallbackPolicy | None = None  # None: this queue offers no call-backs
    hold: HoldPolicy = field(default_factory=HoldPolicy)
    survey: str | None = None          # IVR flow the caller is taken to when the agent hangs up
    webhook: Webhook | None = None     # screen pop to a CRM on each offer
    recording: RecordingPolicy = field(default_factory=RecordingPolicy)


@dataclass(frozen=True)
class Schedule:
    id: str
    timezone: str                      # IANA name, e.g. "Europe/London"
    hours: dict[str, tuple[tuple[time, time], ...]]   # weekday -> open intervals
    holidays: tuple[date, ...] = ()


@dataclass(frozen=True)
class Distribution:
    """A positive random duration: exponential (mean) or lognormal (mean, sd)."""
    kind: Literal["exponential", "lognormal", "fixed"]
    mean_s: float
    sd_s: float = 0.0


@dataclass(frozen=True)
class Break:
    at: time
    minutes: float


@dataclass(frozen=True)
class Shift:
    agents: tuple[str, ...]            # agent ids (a team entry is expanded by the loader)
    start: time
    end: time
    breaks: tuple[Break, ...] = ()


@dataclass(frozen=True)
class IvrTraffic:
    """Simulated callers who enter an IVR flow instead of a queue.

    `choices` and `digits` are keyed "flow/node".  At a menu or survey node a
    caller presses a key drawn from `choices` (probabilities; what is left to 1
    is silence, so the menu times out); at a collect node a caller types
    `digits` (or stays silent) and confirms a read-back.  During every prompt a
    caller hangs up with probability `hangup_per_prompt`, so long menus lose
    callers.  `survey_rate` of the callers an agent answered stay for the
    post-call survey flow `survey_flow`.
    """
    flow: str
    arrivals: tuple[float, ...]                       # calls per interval entering `flow`
    prompt_s: float = 4.0                             # seconds per prompt played or said
    think_s: float = 2.0                              # seconds before a caller keys an answer
    hangup_per_prompt: float = 0.0
    choices: dict[str, dict[str, float]] = field(default_factory=dict)
    digits: dict[str, str] = field(default_factory=dict)
    survey_flow: str | None = None
    survey_rate: float = 0.0


@dataclass(frozen=True)
class Simulation:
    start: datetime                    # first instant of the simulated day
    interval_minutes: int              # width of one arrival-profile interval
    arrivals: dict[str, tuple[float, ...]]   # queue -> calls offered per interval
    handle_time: dict[str, Distribution]     # queue -> talk time; key "default" for the rest
    patience: dict[str, Distribution]        # queue -> caller patience; key "default"
    shifts: tuple[Shift, ...] = ()           # empty: every agent works the whole day
    answer_delay_s: float = 3.0              # agent ring time before answering
    no_answer_rate: float = 0.0              # probability an agent does not answer (RONA)
    rona_recovery_s: float = 60.0            # an agent paused for RONA unpauses after this long
    callback_acceptance: float = 0.0         # probability a caller offered a call-back takes it
    callback_answer_rate: float = 0.85       # probability the customer answers a call-back attempt
    ivr: IvrTraffic | None = None            # callers who start in an IVR flow
    # History (multi-day runs only; a run of hours plays the profile as written):
    weekdays: dict[str, float] = field(default_factory=dict)   # local weekday -> arrival multiplier (others 1)
    trend_per_week: float = 0.0              # relative growth per week, compounding from start's date
    overdispersion: float = 0.0              # variance of a mean-1 Gamma factor per day, queue and interval


@dataclass(frozen=True)
class BreakRule:
    """A break every shift of a rule takes, starting between `from_h` and `to_h` after the shift starts."""
    minutes: float
    from_h: float
    to_h: float


@dataclass(frozen=True)
class ShiftRule:
    """Shifts `acd-router schedule` may use: `hours` long (breaks included), starting every `every_min`
    minutes from `earliest` to `latest` (times of day in the centre's zone), with these breaks."""
    name: str
    hours: float
    earliest: time
    latest: time
    every_min: int = 30
    breaks: tuple[BreakRule, ...] = ()


@dataclass(frozen=True)
class Planning:
    """Inputs of `staff` and `schedule` (DESIGN §11)."""
    shrinkage: float = 0.0                 # share of paid time off the phones besides scheduled breaks
    shifts: tuple[ShiftRule, ...] = ()     # the shift rules a schedule combines


@dataclass(frozen=True)
class AmiSettings:
    host: str = "127.0.0.1"
    port: int = 5038
    username: str = "acd-router"
    secret: str = field(default="", repr=False)   # never logged
    ping_interval_s: float = 5.0                  # a Ping this often proves the link alive
    ping_timeout_s: float = 3.0                   # no reply this soon: the link is dead, reconnect
    action_timeout_s: float = 10.0                # any AMI action fails after this long


@dataclass(frozen=True)
class AgiSettings:
    host: str = "127.0.0.1"
    port: int = 4573


WEB_ROLES: tuple[str, ...] = ("viewer", "supervisor", "admin")   # and "agent:<agent id>"


@dataclass(frozen=True)
class WebToken:
    """A bearer token of the web API, kept only as its SHA-256 (hex)."""
    name: str                          # who holds it, as the audit trail names them
    sha256: str = field(repr=False)
    role: str = "viewer"               # viewer | supervisor | admin | agent:<agent id>
    queues: tuple[str, ...] | None = None   # the queues it may see and act on; None: all


@dataclass(frozen=True)
class WebSettings:
    """The dashboard, admin API and metrics of `serve` (DESIGN §9)."""
    enabled: bool = True
    host: str = "127.0.0.1"            # loopback unless configured otherwise (TLS: a proxy in front)
    port: int = 8080
    tokens: tuple[WebToken, ...] = ()  # more from ACD_WEB_TOKENS
    caller_wait_alarm_s: float = 120.0      # alarm: a caller has waited longer than this
    agent_pause_alarm_min: float = 15.0     # alarm: an agent has been paused longer than this
    push_interval_s: float = 0.25           # viewers get changes at most this often
    kpi_refresh_s: float = 15.0             # "today" figures are read again from PostgreSQL this often
    interval_minutes: int = 30              # width of the intraday chart's intervals
    session_hours: float = 12.0             # a dashboard sign-in lasts this long


@dataclass(frozen=True)
class HaSettings:
    """Active/standby group of `serve` processes (DESIGN §10; router.ha.Leadership).

    The loader checks what `Leadership` requires: every timing positive,
    `check_interval_s + check_timeout_s` (the lease) and `retry_s` each less than
    `server_idle_timeout_s`, so a leader cut off from the database fences itself
    before PostgreSQL ends its session and frees the lock.
    """
    group: str = "acd-router"          # processes with the same group (and database) form one group
    retry_s: float = 0.5               # a standby tries the lock this often
    check_interval_s: float = 0.5      # the leader proves its session this often ...
    check_timeout_s: float = 1.0       # ... each check bounded by this (lease = interval + timeout)
    server_idle_timeout_s: float = 3.0  # PostgreSQL ends a silent leader's session (and lock) after this


@dataclass(frozen=True)
class DatabaseSettings:
    dsn: str | None = field(default=None, repr=False)   # None: ACD_DATABASE_URL or embedded server
    data_dir: str | None = None                         # embedded server's data directory


@dataclass(frozen=True)
class Centre:
    source: str                         # path of the YAML file it came from
    skills: dict[str, Skill]
    agents: dict[str, Agent]
    queues: dict[str, Queue]
    schedules: dict[str, Schedule] = field(default_factory=dict)
    simulation: Simulation | None = None
    planning: Planning = field(default_factory=Planning)
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    ami: AmiSettings | None = None
    agi: AgiSettings = field(default_factory=AgiSettings)
    web: WebSettings = field(default_factory=WebSettings)
    ha: HaSettings = field(default_factory=HaSettings)
    flows: str | None = None            # directory of IVR flow files
    short_abandon_s: float = 5.0
    timezone: str = "UTC"               # the centre's IANA zone: shift times, intervals, "today"
    recording: RecordingSettings = field(default_factory=RecordingSettings)
    scorecards: str | None = None       # QA scorecard directory (absolute; the loader resolves it)
