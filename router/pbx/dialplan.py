"""The dialplan contract: the names acd-router and asterisk_conf/extensions.conf share.

Every context the router sends a channel to, every ``ROUTER_*`` channel variable
it sets or reads, every ``UserEvent`` the dialplan reports with, lives here and
nowhere else in the Python code; extensions.conf's head comment is the other
side of the same list.  The state machine (router.pbx.calls) builds its actions
from these names; the adapter and the FastAGI IVR driver only send them.
"""
from __future__ import annotations

# --- contexts ---------------------------------------------------------------------------
INBOUND_CONTEXT = "router-inbound"       # answer, IVR over FastAGI, then ROUTER_NEXT
AGI_CONTEXT = "router-agi"               # Gosub: a FastAGI route on the first router that answers
HOLD_CONTEXT = "router-hold"             # music on hold until the router's Redirect
HOLD_OFFER_EXTEN = "offer"               # ... its extension that runs the call-back offer AGI
CONNECT_CONTEXT = "router-connect"       # Dial(ROUTER_TARGET), then survey or hang-up
DIVERT_CONTEXT = "router-divert"         # voicemail | transfer | message and hang-up
CALLBACK_CONTEXT = "router-callback"     # call-back, agent first: the agent's leg runs it
CALLBACK_CUSTOMER_CONTEXT = "router-callback-customer"

# --- channel variables ------------------------------------------------------------------
NEXT = "ROUTER_NEXT"                     # what the dialplan does after an AGI (values below)
TARGET = "ROUTER_TARGET"                 # dial string of the agent or the transfer target
RING_TIMEOUT = "ROUTER_RING_TIMEOUT"     # seconds the target rings
CALL_ID = "ROUTER_CALL_ID"               # the router's call id (echoed in user events)
MAILBOX = "ROUTER_MAILBOX"
MESSAGE = "ROUTER_MESSAGE"               # prompt [router-divert] plays before hanging up
SURVEY = "ROUTER_SURVEY"                 # the queue's post-call survey flow (empty: none)
MOH_CLASS = "ROUTER_MOH_CLASS"
ANNOUNCE_S = "ROUTER_ANNOUNCE_S"
# where a queued caller stands, so a router that restarts can put them back at their place
QUEUE = "ROUTER_QUEUE"                   # the queue the caller joined first
JOINED_AT = "ROUTER_JOINED_AT"           # epoch seconds of the first queue.joined
SEQ = "ROUTER_SEQ"                       # arrival sequence (ties at the same instant)
PRIORITY = "ROUTER_PRIORITY"             # the call's priority, the queue's included
SKILLS = "ROUTER_SKILLS"                 # its extra skill minimums: skill:level;skill:level
CB_NUMBER = "ROUTER_CB_NUMBER"
CB_AGENT = "ROUTER_CB_AGENT"
CB_CUSTOMER = "ROUTER_CB_CUSTOMER"
WHISPER = "ROUTER_WHISPER"
RECORD = "ROUTER_RECORD"                 # MixMonitor's file as Asterisk sees it (empty: not recorded)
RECORD_OPTIONS = "ROUTER_RECORD_OPTIONS" # MixMonitor's options: D (stereo) or none
RECORD_ANNOUNCE = "ROUTER_RECORD_ANNOUNCE"   # prompt telling the caller the call is recorded

NEXT_HOLD, NEXT_TRANSFER, NEXT_VOICEMAIL, NEXT_HANGUP = "hold", "transfer", "voicemail", "hangup"
NEXT_CONNECT = "connect"                # [router-inbound] goes on to [router-connect] (a recorded call offered at once)

# --- user events ------------------------------------------------------------------------
DIAL_FAILED_EVENT = "RouterDialFailed"   # call, target, status: a Dial of router-connect failed
CALLBACK_EVENT = "RouterCallback"        # call, stage, status: a call-back's progress
AGENT_EVENT = "RouterAgent"              # agent (phone number), action, reason: feature codes

# DIALSTATUS of a Dial that was not answered -> the engine's AgentMissed reason
MISSED_REASONS = {"NOANSWER": "timeout", "BUSY": "busy", "CHANUNAVAIL": "unreachable",
                  "CONGESTION": "unreachable"}
# DIALSTATUS of a call-back's customer leg -> CallbackFailed reason
CALLBACK_FAILED = {"NOANSWER": "no_answer", "BUSY": "busy"}

HOLD_KEYS = "0123456789*#"               # keys a holding caller may press


def set_and_redirect(channel: str, context: str, variables: dict[str, str],
                     exten: str = "s") -> list[dict[str, str]]:
    """Setvar actions then the Redirect that uses them, for `AmiLink.pipeline` (one round trip)."""
    return [*({"Action": "Setvar", "Channel": channel, "Variable": name, "Value": value}
              for name, value in variables.items()),
            {"Action": "Redirect", "Channel": channel, "Context": context, "Exten": exten, "Priority": "1"}]
